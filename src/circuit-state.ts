// The three states of an opossum circuit breaker, named as /metrics and /health/ready report them.

export type CircuitState = 'closed' | 'half-open' | 'open'

export function circuitState(breaker: { opened: boolean; halfOpen: boolean }): CircuitState {
  if (breaker.halfOpen) return 'half-open'
  return breaker.opened ? 'open' : 'closed'
}

/** The state as the circuit-breaker gauge reports it: 0 closed, 1 half-open, 2 open. */
export const CIRCUIT_GAUGE_VALUE: Record<CircuitState, number> = { closed: 0, 'half-open': 1, open: 2 }

/** The one help text of `variant_origin_circuit_breaker_state`, which every breaker's owner registers its label of. */
export const CIRCUIT_GAUGE = {
  name: 'variant_origin_circuit_breaker_state',
  help: 'Circuit breakers: 0 closed, 1 half-open, 2 open (calls refused at once).',
  type: 'gauge',
  labelNames: ['breaker'],
} as const
