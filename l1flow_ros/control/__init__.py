"""Control (no ROS): from action chunks to a smooth, safe command stream at control rate.

- ``scheduler``: ``ChunkScheduler``, the receding-horizon plan: chunks stamped with their
  observation time, stale actions dropped, splicing (replace / cross-fade / ensemble),
  starvation hold.
- ``interp``: chunk rate -> control rate (cubic / quintic ``Plan``).
- ``safety``: position / velocity / acceleration limits, gripper handling.
"""
