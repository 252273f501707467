"""Write operations of the labeling app. Views, admin actions, tasks and commands call these."""
