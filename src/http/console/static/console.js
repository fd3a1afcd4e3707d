// litejobs console: keeps a running job's page up to date. The server's live watch of the
// job (Server-Sent Events) says when something changed; the page then fetches the changed
// part again, as the server renders it. Without this script every page still works.
(function () {
  "use strict";

  function follow(live) {
    var fragment = live.getAttribute("data-live");
    var events = live.getAttribute("data-events");
    var source = null;
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
      if (timer) { clearInterval(timer); timer = null; }
    }

    function refresh() {
      if (busy) { again = true; return; }
      busy = true;
      again = false;
      fetch(fragment, { credentials: "same-origin", headers: { "Accept": "text/html" } })
        .then(function (response) {
          if (response.redirected) {
            // The session ended: the page itself now leads to the sign-in form.
            stop();
            window.location.reload();
            return;
          }
          if (!response.ok) { throw new Error("status " + response.status); }
          var status = response.headers.get("x-job-status");
          return response.text().then(function (html) {
            live.innerHTML = html;
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
    if (window.EventSource) {
      live.setAttribute("data-via", "events");
      source = new EventSource(events);
      source.addEventListener("job", refresh);
      source.addEventListener("snapshot", refresh);
      source.onerror = function () {
        // The stream is gone (session ended, server restarting): fall back to polling.
        if (source) { source.close(); source = null; }
        if (!timer && !finished()) {
          live.setAttribute("data-via", "polling");
          timer = setInterval(refresh, 2000);
        }
      };
    } else {
      live.setAttribute("data-via", "polling");
      timer = setInterval(refresh, 2000);
    }
  }

  document.addEventListener("DOMContentLoaded", function () {
    var live = document.getElementById("live");
    if (live && live.getAttribute("data-live")) { follow(live); }
  });
})();
