"""breaker-machines: circuit breakers for structured concurrency."""
