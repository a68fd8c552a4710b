"""Tags (rule and operator) and segments."""
