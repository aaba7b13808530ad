import t from 'tap'
import { describeFailure } from '../../src/cli/run-cli.ts'
import { DomainError } from '../../src/errors.ts'

t.test('a failed command names each problem of a refused batch on its own line', async (t) => {
  const err = new DomainError('VALIDATION_FAILED', '2 problem(s); nothing was written', {
    details: [
      { record: -1, field: 'endDate', message: 'must be a date YYYY-MM-DD' },
      { record: 3, field: 'clicks', message: 'must be a number >= 0' },
    ],
  })
  t.equal(describeFailure(err), '2 problem(s); nothing was written\n  endDate: must be a date YYYY-MM-DD\n  row 3: clicks: must be a number >= 0')
})

t.test('other details are shown as JSON; plain errors and non-errors by their message', async (t) => {
  t.equal(describeFailure(new DomainError('CONFLICT', 'in use', { details: { model: 'm' } })), 'in use\n{\n  "model": "m"\n}')
  t.equal(describeFailure(new DomainError('CONFLICT', 'in use')), 'in use')
  t.equal(describeFailure(new Error('boom')), 'boom')
  t.equal(describeFailure('text'), 'text')
})
