"""A Redis user without channel rights (issue 9, item 10): /healthz, the page config
and the viewers say the live feed is unavailable and why (real servers)."""

from tempo_helpers import Client, WebProcess
from waiting import wait_for

import greenredis
from greenredis.telemetry.stats import Stats


def test_refused_channels_are_reported_not_claimed(make_server):
    server = make_server(users=["tempo on >pw ~* +@all resetchannels"])
    admin = greenredis.Redis.from_url(server.url)
    Stats(admin, "web.1").publish("rps", 1)
    url = f"redis://tempo:pw@127.0.0.1:{server.port}/0"
    with WebProcess(url) as web:
        c = Client(web.ws_url)
        c.send({"op": "watch", "kind": "stats", "instance": "web.1"})
        seen = c.until(lambda m: m["type"] == "feed")
        assert seen[-1]["ok"] is False and "NOPERM" in seen[-1]["error"]
        health = wait_for(lambda: (h := web.get_json("/healthz")) and not h["live"] and h)
        assert "stats:{web.1}" not in health["channels"], health
        assert health["refused"] == ["stats:{web.1}"] and "NOPERM" in health["live_error"]
        # the user is given channel rights: the next watch subscribes, the feed is back
        admin.cmd(["ACL", "SETUSER", "tempo", "allchannels"])
        c.send({"op": "unwatch", "kind": "stats", "instance": "web.1"})
        c.send({"op": "watch", "kind": "stats", "instance": "web.1"})
        c.until(lambda m: m["type"] == "feed" and m["ok"])  # the unwatch left no refused channel
        # The watch's history comes after Redis confirmed its SUBSCRIBE (/healthz lists a
        # channel as soon as it is asked for: a PUBLISH then could beat the SUBSCRIBE).
        c.until(lambda m: m["type"] == "history")
        health = web.get_json("/healthz")
        assert health["live"] and health["channels"] == ["stats:{web.1}"] and health["refused"] == []
        Stats(admin, "web.1").publish("rps", 2)
        c.until(lambda m: m["type"] == "point" and m["value"] == 2)
        c.close()
    admin.close()
