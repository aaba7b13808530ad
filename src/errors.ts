// Coded errors thrown by domain code; the HTTP layer maps codes to statuses in one place.

export type ErrorCode = 'DATABASE_UNAVAILABLE' | 'VALIDATION_FAILED' | 'NOT_FOUND' | 'UNPROCESSABLE' | 'CONFLICT' | 'UNAVAILABLE' | 'TOO_LARGE'

export class DomainError extends Error {
  readonly code: ErrorCode
  readonly details: unknown
  constructor(code: ErrorCode, message: string, options?: { cause?: unknown; details?: unknown }) {
    super(message, options?.cause === undefined ? undefined : { cause: options.cause })
    this.name = 'DomainError'
    this.code = code
    this.details = options?.details
  }
}

/** One thing wrong with an input: which record (its index, -1 for the input as a whole), which field, what to fix. */
export interface Problem {
  record: number
  field: string
  message: string
}

/** The 400 for a batch with problems (the first 200 listed): nothing of it was written. */
export function validationError(kind: string, problems: readonly Problem[]): DomainError {
  return new DomainError('VALIDATION_FAILED', `${problems.length} problem(s) in the ${kind} batch; nothing was written`, {
    details: problems.slice(0, 200).map((p) => ({ record: p.record, field: p.field, message: p.message })),
  })
}

export const isProblem = (value: unknown): value is Problem =>
  typeof value === 'object' && value !== null && typeof (value as Problem).field === 'string' && typeof (value as Problem).message === 'string'
