// litejobs console: keeps a running job's page up to date. The server's live watch of the
// job (Server-Sent Events) says when something changed; the page then fetches the changed
// part again, as the server renders it. Without this script every page still works.
(function () {
  "use strict";

  // A browser keeps at most six HTTP/1.1 connections to a server, shared by all its tabs: a
  // stream held by every open job page would leave none for the pages themselves. At most
  // STREAMS pages follow their job by a stream at once (counted across tabs with the Web
  // Locks API); the others, and browsers without that API, ask every POLL_MS.
  var STREAMS = 3;
  var POLL_MS = 2000;

  // Calls then(release) once a stream's slot is taken (release() gives it back), or
  // then(null) when every slot is taken or slots cannot be counted.
  function takeSlot(then) {
    if (!(navigator.locks && navigator.locks.request)) { then(null); return; }
    var slot = 0;
    function next() {
      if (slot >= STREAMS) { then(null); return; }
      var name = "litejobs-stream-" + slot;
      slot += 1;
      navigator.locks.request(name, { ifAvailable: true }, function (lock) {
        if (!lock) { next(); return undefined; }
        // The lock is held until the promise resolves (or the page goes away).
        return new Promise(function (release) { then(release); });
      }).catch(function () { then(null); });
    }
    next();
  }

  function follow(live) {
    var fragment = live.getAttribute("data-live");
    var events = live.getAttribute("data-events");
    var source = null;
    var release = null;
    var timer = null;
    var busy = false;
    // A change that came while a fetch was on its way: that fetch may have read the job
    // before it, so another follows.
    var again = false;

    function finished() {
      var status = live.getAttribute("data-status");
      return status === "FINISHED" || status === "DELETED";
    }

    function stop() {
      if (source) { source.close(); source = null; }
      if (release) { release(); release = null; }
      if (timer) { clearInterval(timer); timer = null; }
    }

    function poll() {
      if (!timer && !finished()) {
        live.setAttribute("data-via", "polling");
        timer = setInterval(refresh, POLL_MS);
      }
    }

    // Puts the fragment in place, keeping the keyboard's focus on the link it was on.
    function show(html) {
      var focused = document.activeElement;
      var href = focused && live.contains(focused) ? focused.getAttribute("href") : null;
      live.innerHTML = html;
      if (href) {
        var links = live.querySelectorAll("a[href]");
        for (var i = 0; i < links.length; i += 1) {
          if (links[i].getAttribute("href") === href) { links[i].focus(); break; }
        }
      }
    }

    function refresh() {
      if (busy) { again = true; return; }
      busy = true;
      again = false;
      fetch(fragment, { credentials: "same-origin", headers: { "Accept": "text/html" } })
        .then(function (response) {
          if (response.redirected || response.status === 403 || response.status === 404) {
            // The session ended, or no longer reaches the job (another project chosen, a
            // grant taken away): the page itself now says so, or leads to the sign-in form.
            stop();
            window.location.reload();
            return undefined;
          }
          if (!response.ok) { throw new Error("status " + response.status); }
          var status = response.headers.get("x-job-status");
          return response.text().then(function (html) {
            show(html);
            if (status) { live.setAttribute("data-status", status); }
            if (status === "DELETED") {
              // A deleted job is not deleted again: its page offers no Delete any more.
              var remove = document.getElementById("delete-job");
              if (remove) { remove.parentNode.removeChild(remove); }
            }
            if (finished()) { stop(); }
          });
        })
        .catch(function () { /* the next event or tick tries again */ })
        .then(function () {
          busy = false;
          if (again && !finished()) { refresh(); }
        });
    }

    if (finished()) { return; }
    if (!window.EventSource) { poll(); return; }
    takeSlot(function (slot) {
      if (!slot) { poll(); return; }
      if (finished()) { slot(); return; }
      release = slot;
      live.setAttribute("data-via", "events");
      source = new EventSource(events);
      source.addEventListener("job", refresh);
      source.addEventListener("snapshot", refresh);
      source.onerror = function () {
        // The stream is gone (session ended, server restarting): fall back to polling.
        if (source) { source.close(); source = null; }
        if (release) { release(); release = null; }
        poll();
      };
    });
  }

  // A page the browser shows again (Back) keeps what was typed into its filters before they
  // were applied; they are put back to the view the page lists, as its URL says.
  window.addEventListener("pageshow", function () {
    var filters = document.querySelector("form.filters");
    if (filters) { filters.reset(); }
  });

  document.addEventListener("DOMContentLoaded", function () {
    var live = document.getElementById("live");
    if (live && live.getAttribute("data-live")) { follow(live); }
  });
})();
