// The three states of an opossum circuit breaker, named as /metrics and /health/ready report them.

export type CircuitState = 'closed' | 'half-open' | 'open'

export function circuitState(breaker: { opened: boolean; halfOpen: boolean }): CircuitState {
  if (breaker.halfOpen) return 'half-open'
  return breaker.opened ? 'open' : 'closed'
}
