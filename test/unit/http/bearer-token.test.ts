// Authorization: the scheme is case-insensitive (RFC 9110 section 11.1); the token is not.

import t from 'tap'
import { bearerTokenCheck } from '../../../src/http/bearer-token.ts'

t.test('Bearer, bearer, BEARER: one scheme; the token exact', async (t) => {
  const token = 'unit-test-token-0123456789'
  const check = bearerTokenCheck(token)
  for (const scheme of ['Bearer', 'bearer', 'BEARER', 'bEaReR']) t.ok(check(`${scheme} ${token}`), scheme)
  t.ok(check(`Bearer  ${token}`), 'one or more spaces (1*SP)')
  const refused = [undefined, '', token, `Bearer ${token.toUpperCase()}`, `Bearer ${token}x`, `Bearer`, `Bearer `, `Basic ${token}`, `Bearer${token}`, `Bearer ${token} extra`, `Bearer\t${token}`]
  for (const header of refused) t.notOk(check(header), JSON.stringify(header))
})
