"""Control (no ROS): from action chunks to a smooth, safe command stream at control rate.

- ``scheduler``: ``ChunkScheduler``, the receding-horizon plan: chunks stamped with their
  observation time, stale actions dropped, splicing (replace / cross-fade / ensemble),
  starvation hold.
- ``interp``: chunk rate -> control rate (cubic / quintic ``Plan``).
- ``safety``: position / velocity / acceleration limits, gripper handling.
- ``config``: ``ExecutorConfig``, the executor's parameters, and its limits merged with a
  checkpoint's.
- ``stream``: ``CommandStream``, enable / disable, controller presence, what each tick sends.
- ``loop``: ``ControlLoop``, absolute deadlines, missed ticks, period-error statistics.
- ``realtime``: SCHED_FIFO, affinity, middleware threads, gc, stop signals (and why).
- ``status``: joint states picked by name; the executor's diagnostics summary.
"""
