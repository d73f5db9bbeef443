"""Drop-in replacements for other circuit-breaker libraries, on breaker_machines."""
