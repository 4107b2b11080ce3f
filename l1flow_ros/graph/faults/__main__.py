"""``python -m l1flow_ros.graph.faults --controller``: the arm and guard process the harness starts."""

import sys

from l1flow_ros.graph.faults.guard import main

if sys.argv[1:] == ["--controller"]:
    sys.exit(main())
sys.exit("usage: l1flow faults (this module's --controller mode is started by the harness)")
