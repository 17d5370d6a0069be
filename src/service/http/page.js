// Auto-refresh for lists: a page with [data-refresh="N"] reloads every N
// seconds while the tab is visible. Nothing else runs here.
(function () {
  var el = document.querySelector('[data-refresh]');
  if (!el) return;
  var secs = parseInt(el.getAttribute('data-refresh'), 10) || 15;
  setInterval(function () {
    if (document.visibilityState === 'visible') location.reload();
  }, secs * 1000);
})();
