"""Write operations of the intake app. Views, admin actions, tasks and commands call these."""
