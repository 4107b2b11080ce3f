"""The simulated Franka Panda: the arm on a table (panda.py), differential IK (ik.py),
scripted experts (expert.py) and their measurement (measure.py). No ROS."""
