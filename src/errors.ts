// Coded errors thrown by domain code; the HTTP layer maps codes to statuses in one place.

export type ErrorCode = 'DATABASE_UNAVAILABLE' | 'VALIDATION_FAILED' | 'NOT_FOUND' | 'UNPROCESSABLE' | 'CONFLICT' | 'UNAVAILABLE'

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
