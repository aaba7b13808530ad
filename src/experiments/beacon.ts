// The first-party beacon of pages under experiment: one `view` per page view and a `cta_click` per click
// on the hero's CTA, sent with navigator.sendBeacon to POST /events as text/plain (no CORS preflight),
// with the page, segment and variant from the hero's data attributes and the visitor's bucket from the
// CDN's vo_bucket cookie. No third-party code; a crawler without JavaScript sends nothing.

export const BEACON_SCRIPT = `(function () {
  var hero = document.querySelector('[data-experiment]');
  if (!hero || !navigator.sendBeacon) return;
  var m = /(?:^|;\\s*)vo_bucket=(\\d+)/.exec(document.cookie);
  var base = { path: hero.getAttribute('data-page'), segment: hero.getAttribute('data-segment'), variant: Number(hero.getAttribute('data-variant')) };
  if (m) base.bucket = Number(m[1]);
  function send(type) {
    var event = { type: type, ts: Date.now() };
    for (var k in base) event[k] = base[k];
    navigator.sendBeacon('/events', JSON.stringify(event));
  }
  send('view');
  var ctas = hero.querySelectorAll('a.cta');
  for (var i = 0; i < ctas.length; i++) ctas[i].addEventListener('click', function () { send('cta_click'); });
})();
`
