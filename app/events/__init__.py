"""Events from outside: delivering them to waiting executions, and keeping those nobody awaited."""
