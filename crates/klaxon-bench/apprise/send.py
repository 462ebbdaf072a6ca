"""Scenario 11's Apprise side: N JSON notifications to one json:// URL through Apprise's Python
API, the way a bot uses it (one Apprise object, notify() per message). Prints one JSON line:
{"sent": ok, "failed": n, "secs": elapsed, "version": apprise.__version__}. Python start-up and
the import are not timed."""

import json
import sys
import time

import apprise


def main() -> None:
    url, n = sys.argv[1], int(sys.argv[2])
    a = apprise.Apprise()
    if not a.add(url):
        raise SystemExit(f"apprise refused the URL {url}")
    # Warm-up: the first notify loads the plugin and opens the connection.
    a.notify(title="warm-up", body="warm-up")
    ok = failed = 0
    t0 = time.perf_counter()
    for i in range(n):
        if a.notify(title="BUY MNQ", body=f"filled 2 MNQ @ 23,488.75 #{i}"):
            ok += 1
        else:
            failed += 1
    secs = time.perf_counter() - t0
    print(json.dumps({"sent": ok, "failed": failed, "secs": secs, "version": apprise.__version__}))


if __name__ == "__main__":
    main()
