import t from 'tap'
import { unstorableJson, unstorableText } from '../../src/storable-text.ts'

t.test('text PostgreSQL can store', async (t) => {
  for (const ok of ['', 'plain', 'Größe 😀 中文', '\ud83d\ude00', 'tab\tand\nnewline', '\uffff\ufffe', '\u0001 control characters other than NUL']) {
    t.equal(unstorableText(ok), undefined, JSON.stringify(ok))
  }
})

t.test('NUL and unpaired surrogates are refused, by position, without echoing the value', async (t) => {
  t.equal(unstorableText('ab\u0000c'), 'contains a NUL character (U+0000) at position 2, which PostgreSQL cannot store; remove it')
  t.match(unstorableText('x\ud800y'), /^contains an unpaired UTF-16 surrogate \(\\ud800\) at position 1, which is not a Unicode character \(stored, it would become U\+FFFD\); send both halves/)
  t.match(unstorableText('😀\udc00'), /\(\\udc00\) at position 2/, 'a low surrogate with no high one, after a valid pair')
  t.match(unstorableText('end\ud83d'), /\(\\ud83d\) at position 3/, 'a high surrogate at the end')
  t.match(unstorableText('\ude00\ud83d'), /\(\\ude00\) at position 0/, 'halves in the wrong order')
  t.notMatch(unstorableText('secret\u0000'), /secret/)
})

t.test('jsonb: every key and string at any depth, named by its path', async (t) => {
  t.equal(unstorableJson({ a: { b: ['x', 1, null, true, { c: '😀' }] } }, 'metadata'), undefined)
  t.match(unstorableJson({ a: { b: 'x\u0000' } }, 'metadata'), { path: 'metadata.a.b', message: /NUL character/ })
  t.match(unstorableJson({ list: ['ok', '\ud800'] }, 'metadata'), { path: 'metadata.list[1]', message: /unpaired UTF-16 surrogate/ })
  t.match(unstorableJson({ a: { 'k\u0000': 1 } }, 'metadata'), { path: 'metadata.a["k\\u0000"]', message: /^key contains a NUL character/ })
  t.match(unstorableJson({ 'a b': { '\ud800': 1 } }, 'metadata'), { path: 'metadata["a b"]["\\ud800"]', message: /^key contains an unpaired UTF-16 surrogate/ })
  t.match(unstorableJson([[{ x: 'ok' }, { y: '\u0000' }]], 'm'), { path: 'm[0][1].y' })
})
