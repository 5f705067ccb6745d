"""The web console in a real browser: headless Chromium (Debian's) driven by Playwright, against `tidelog
serve --console-port`. Every page loads without a console error; what the pages show is checked against
what was produced and committed; the message browser pages through a partition; each action works with
--console-write and is refused without it. Screenshots of the main pages go to the test's directory."""

from __future__ import annotations

import base64
import json
import os
import urllib.error
import urllib.request

import pytest

from tidelog.client import Admin, Consumer, Producer, QueueConsumer
from tidelog.console.server import CHART_JS

from .helpers.browser import chromium_binary
from .server_process import ServerProcess, config_file, wait_for_file

playwright_api = pytest.importorskip("playwright.sync_api", reason="playwright is in the test extra")
expect = playwright_api.expect

CHART_JS_INSTALLED = any(os.path.exists(p) for p in CHART_JS)
RECORDS = {0: 45, 1: 5}
COMMITTED = {0: 10, 1: 0}
LAG = sum(RECORDS[p] - COMMITTED[p] for p in RECORDS)


class ConsoleBroker:
    def __init__(self, root, write: bool) -> None:
        self.port_file = str(root / "console.port")
        extra = ["--console-port", "0", "--console-port-file", self.port_file] + (["--console-write"] if write else [])
        self.server = ServerProcess(str(root / "data"), "--config", config_file(root), *extra).start()
        self.url = f"http://127.0.0.1:{int(wait_for_file(self.port_file, self.server.proc, 30, 'the console'))}"


@pytest.fixture(scope="module")
def writable(tmp_path_factory):
    """A broker with --console-write, holding orders (45 + 5 records), the group billing 40 behind, and a
    queue jobs-q with one dead letter."""
    broker = ConsoleBroker(tmp_path_factory.mktemp("console"), write=True)
    target = broker.server.target
    with Admin(target) as admin:
        admin.create_topic("orders", 2)
        admin.create_topic("jobs", 1)
        admin.create_topic("jobs.dlq", 1)
    with Producer(target, linger_ms=0) as producer:
        for partition, n in RECORDS.items():
            for i in range(n):
                producer.send("orders", json.dumps({"n": i}).encode(), key=b"k%d" % i, partition=partition)
        producer.send("jobs", b"bad job", partition=0)
    with Consumer(target, group_id="billing", topics=["orders"], auto_commit=False) as consumer:
        for _ in range(100):
            consumer.poll(0.1)
            if len(consumer.assignment()) == 2:
                break
        consumer.commit({("orders", p): o for p, o in COMMITTED.items()})
    with QueueConsumer(target, "jobs-q", "jobs", dead_letter_topic="jobs.dlq", auto_extend=False) as queue:
        (message,) = queue.receive(1, wait_ms=10_000)
        message.reject("unparsable")
    yield broker
    broker.server.stop()


@pytest.fixture(scope="module")
def read_only(tmp_path_factory):
    broker = ConsoleBroker(tmp_path_factory.mktemp("console-ro"), write=False)
    with Admin(broker.server.target) as admin:
        admin.create_topic("kept", 1)
    yield broker
    broker.server.stop()


@pytest.fixture(scope="module")
def browser():
    executable = chromium_binary()
    with playwright_api.sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=executable, args=["--no-sandbox"])
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser):
    """A page that records console errors and failed requests; the test fails on any."""
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    tab = context.new_page()
    tab.errors = []
    tab.on("console", lambda m: tab.errors.append(m.text) if m.type == "error" else None)
    tab.on("pageerror", lambda e: tab.errors.append(str(e)))
    yield tab
    context.close()
    assert tab.errors == []


def visit(page, url: str) -> None:
    page.goto(url)
    path = url.split("://", 1)[1].split("/", 1)[1].split("?")[0] if "/" in url.split("://", 1)[1] else ""
    page.wait_for_selector(f'body[data-loaded="/{path}"]', state="attached")


def test_every_page_loads_without_a_console_error(writable, page, tmp_path):
    for name, path in (
        ("overview", "/"),
        ("topics", "/topics"),
        ("topic", "/topics/orders"),
        ("messages", "/topics/orders/messages"),
        ("groups", "/groups"),
        ("group", "/groups/billing"),
        ("queues", "/queues"),
        ("queue", "/queues/jobs-q"),
        ("settings", "/settings"),
    ):
        visit(page, writable.url + path)
        assert not page.locator(".error").count(), f"{path}: {page.locator('.error').all_inner_texts()}"
        if path in ("/", "/topics/orders", "/groups/billing"):  # the pages with a chart
            charts = page.locator("canvas").count()
            assert charts == 1 if CHART_JS_INSTALLED else "apt-get install libjs-chart.js" in page.content()
        page.screenshot(path=str(tmp_path / f"console-{name}.png"), full_page=True)


def test_the_pages_fit_a_phone_and_read_in_dark(writable, browser, tmp_path):
    """A phone's width in the dark scheme: no page is wider than the screen (tables scroll in their
    own box), and the dark colours apply."""
    context = browser.new_context(viewport={"width": 390, "height": 844}, color_scheme="dark", is_mobile=True)
    try:
        tab = context.new_page()
        for name, path in (("overview", "/"), ("topic", "/topics/orders"), ("messages", "/topics/orders/messages")):
            tab.goto(writable.url + path)
            tab.wait_for_selector(f'body[data-loaded="{path}"]', state="attached")
            width, screen = tab.evaluate("[document.documentElement.scrollWidth, window.innerWidth]")
            assert width <= screen, f"{path} is {width} px wide on a {screen} px screen"
            background = tab.evaluate("getComputedStyle(document.body).backgroundColor")
            assert background == "rgb(13, 17, 23)"  # the dark scheme's
            tab.screenshot(path=str(tmp_path / f"console-phone-dark-{name}.png"), full_page=True)
    finally:
        context.close()


def test_the_pages_show_the_brokers_figures(writable, page):
    visit(page, writable.url + "/topics/orders")
    assert page.inner_text("#topic-records") == f"{sum(RECORDS.values()):,}"
    ends = page.locator("#partitions tbody tr").all_inner_texts()
    assert len(ends) == 2 and "45" in ends[0] and "5" in ends[1]
    visit(page, writable.url + "/groups/billing")
    assert page.inner_text("#group-lag") == f"{LAG:,}"
    visit(page, writable.url + "/topics")
    page.fill("#topic-search", "jobs")
    names = [row.split("\t")[0] for row in page.locator("#topics tbody tr").all_inner_texts()]
    assert names == ["jobs", "jobs.dlq"]
    visit(page, writable.url + "/queues")
    assert "jobs-q" in page.inner_text("#queues") and "jobs.dlq" in page.inner_text("#queues")
    visit(page, writable.url + "/")
    assert page.inner_text("#topics-count") == "3"


def test_the_message_browser_pages_through_a_partition(writable, page):
    visit(page, writable.url + "/topics/orders/messages")

    def offsets() -> list[int]:
        return [int(row.split("\t")[0]) for row in page.locator("#messages tbody tr").all_inner_texts()]

    assert offsets() == list(range(20))
    assert '"n": 0' in page.inner_text("#messages")  # JSON, pretty-printed
    first = page.locator("#messages tbody tr td").first
    page.click("#next")
    expect(first).to_have_text("20")
    assert offsets() == list(range(20, 40))
    page.click("#next")
    expect(first).to_have_text("40")
    assert offsets() == list(range(40, 45)) and page.is_disabled("#next")
    page.click("#previous")
    expect(first).to_have_text("20")
    page.select_option("#partition", "1")
    page.fill("input[name=offset]", "3")
    page.click("#show")
    expect(page.locator("#page-info")).to_contain_text("partition 1")
    assert offsets() == [3, 4]


def test_each_action_works_with_the_write_switch(writable, page):
    target = writable.server.target
    visit(page, writable.url + "/topics")
    page.fill("input[name=name]", "made-here")
    page.fill("input[name=partitions]", "3")
    page.click("button:has-text('Create')")
    page.wait_for_selector("form .ok")
    with Admin(target) as admin:
        assert admin.partitions("made-here") == 3

    visit(page, writable.url + "/topics/made-here")
    page.fill("input[name=value]", "hello from the console")
    page.fill("input[name=partition]", "2")
    page.click("button:has-text('Send')")
    page.wait_for_selector("form .ok")
    assert "offset 0 of partition 2" in page.inner_text("form .ok")
    page.fill("input[name=confirm]", "not-the-name")
    page.click("button.danger")
    page.wait_for_selector("form .error")
    assert [e for e in page.errors if "status of 400" in e] == page.errors and len(page.errors) == 1
    page.errors.clear()  # the refusal the test asked for (the browser logs every 4xx)
    with Admin(target) as admin:
        assert "made-here" in admin.list_topics()  # a wrong confirmation deletes nothing
    page.fill("input[name=confirm]", "made-here")
    page.click("button.danger")
    page.wait_for_url(writable.url + "/topics")
    with Admin(target) as admin:
        assert "made-here" not in admin.list_topics()

    visit(page, writable.url + "/groups/billing")
    page.locator("form").nth(0).locator("input[name=topic]").fill("orders")
    page.locator("form").nth(0).locator("button").click()
    page.wait_for_selector("#reset-preview table")
    assert "would be" in page.inner_text("#reset-preview")
    with Admin(target) as admin:
        assert admin.committed_offsets("billing")[("orders", 0)] == COMMITTED[0]  # a preview changes nothing
    page.locator("form").nth(1).locator("input[name=topic]").fill("orders")
    page.locator("form").nth(1).locator("input[name=to]").fill("latest")
    page.locator("form").nth(1).locator("button").click()
    page.wait_for_selector("text=offsets reset")
    with Admin(target) as admin:
        assert admin.committed_offsets("billing") == {("orders", p): n for p, n in RECORDS.items()}

    visit(page, writable.url + "/queues/jobs-q")
    page.click("button:has-text('Redrive')")
    page.wait_for_selector("form .ok")
    assert page.inner_text("form .ok") == "1 moved to jobs"


def test_actions_are_refused_without_the_write_switch(read_only, page):
    visit(page, read_only.url + "/topics")
    assert page.locator("form").count() == 0  # no action offered
    visit(page, read_only.url + "/topics/kept")
    assert page.locator("form").count() == 0
    for path, body in (
        ("/api/topics", {"name": "sneaky", "partitions": 1}),
        ("/api/topics/kept/delete", {"confirm": "kept"}),
        ("/api/topics/kept/produce", {"value": "x"}),
    ):
        request = urllib.request.Request(
            read_only.url + path, json.dumps(body).encode(), {"X-Tidelog-Console": "1"}, method="POST"
        )
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(request, timeout=10)
        assert refused.value.code == 403 and "--console-write" in json.loads(refused.value.read())["error"]
    with Admin(read_only.server.target) as admin:
        assert admin.list_topics() == ["kept"] and admin.list_offsets("kept", 0).log_end == 0


def test_an_action_without_the_consoles_header_is_refused(writable):
    """A form on another site can POST here, but cannot add the header: nothing happens."""
    request = urllib.request.Request(
        writable.url + "/api/topics", b'{"name": "cross-site"}', {"Content-Type": "application/json"}, method="POST"
    )
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request, timeout=10)
    assert refused.value.code == 403
    with Admin(writable.server.target) as admin:
        assert "cross-site" not in admin.list_topics()


def test_console_settings_that_cannot_work_are_refused(tmp_path):
    import subprocess
    import sys

    for args, message in (
        (["--console-host", "0.0.0.0", "--console-port", "0"], "refusing to serve the console on 0.0.0.0"),
        (["--console-write"], "need the console"),
    ):
        done = subprocess.run(
            [sys.executable, "-m", "tidelog", "serve", "--data-dir", str(tmp_path / "d"), "--port", "0", *args],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert done.returncode == 2 and message in done.stderr, done.stderr
    assert not os.path.exists(tmp_path / "d")


def test_any_broker_of_a_cluster_shows_the_whole_cluster(tmp_path, page):
    """Three brokers; a topic of three replicas made through broker 1; broker 3's console shows every
    broker, the controller, and each partition's leader, replicas and ISR."""
    from .helpers.cluster import Cluster

    class ConsoleCluster(Cluster):
        def broker_process(self, broker_id, config, **where):
            proc = super().broker_process(broker_id, config, **where)
            proc.extra = (*proc.extra, "--console-port", "0", "--console-port-file", str(tmp_path / f"c{broker_id}"))
            return proc

    cluster = ConsoleCluster(str(tmp_path), 3).start()
    try:
        cluster.create_topic("spread", partitions=3, rf=3)
        meta = cluster.wait_leaders("spread", 3, isr=3)
        url = f"http://127.0.0.1:{int(wait_for_file(str(tmp_path / 'c3'), cluster.brokers[3].proc, 30, 'console'))}"
        with urllib.request.urlopen(url + "/api/overview", timeout=30) as reply:
            overview = json.loads(reply.read())
        assert overview["clustered"] and sorted(b["id"] for b in overview["brokers"]) == [1, 2, 3]
        assert overview["controller"] in (1, 2, 3) and overview["this_broker"] == 3
        with urllib.request.urlopen(url + "/api/topics/spread", timeout=30) as reply:
            parts = json.loads(reply.read())["partitions"]
        assert {p["partition"]: p["leader"] for p in parts} == {p: meta[p].leader_id for p in range(3)}
        assert all(sorted(p["replicas"]) == [1, 2, 3] and sorted(p["isr"]) == [1, 2, 3] for p in parts)
        visit(page, url + "/topics/spread")
        header = page.inner_text("#partitions thead")
        assert "leader" in header and "in sync" in header
    finally:
        page.goto("about:blank")  # the live page refreshes every 3 s: leave it before its brokers stop
        cluster.stop()


def test_a_secured_brokers_console_asks_who_is_looking_and_applies_their_acls(tmp_path, browser):
    """TLS, users and ACLs: the console serves HTTPS, asks the browser for a user (401 without one or
    with a wrong secret), and reads the broker as that user: alice, who may describe the cluster and the
    topic seen, sees it; bob, who may do nothing, is refused; the admin (a superuser) sees everything."""
    import ssl
    import subprocess
    import sys

    from tidelog.client import ClientSecurity

    from .test_security import Certs

    certs = Certs(str(tmp_path))
    users, acls = str(tmp_path / "users.json"), str(tmp_path / "acls.json")

    def cli(*args: str) -> str:
        done = subprocess.run([sys.executable, "-m", "tidelog", *args], capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        return done.stdout.strip()

    tokens = {name: cli("users", "add", name, "--users-file", users) for name in ("admin", "alice", "bob")}
    cli("acls", "add", "--principal", "alice", "--operation", "describe", "--cluster", "--acls-file", acls)
    cli("acls", "add", "--principal", "alice", "--operation", "describe", "--topic", "seen", "--acls-file", acls)
    port_file = str(tmp_path / "console.port")
    server = ServerProcess(
        str(tmp_path / "data"), "--tls-cert", certs.server_cert, "--tls-key", certs.server_key,
        "--tls-ca", certs.ca_file, "--users-file", users, "--acls-file", acls, "--superusers", "admin",
        "--console-port", "0", "--console-port-file", port_file,
    ).start()  # fmt: skip
    try:
        with Admin(server.target, security=ClientSecurity(ca_file=certs.ca_file, token=tokens["admin"])) as admin:
            admin.create_topic("seen", 1)
            admin.create_topic("hidden", 1)
        url = f"https://127.0.0.1:{int(wait_for_file(port_file, server.proc, 30, 'the console'))}"
        context = ssl.create_default_context(cafile=certs.ca_file)

        def status(path: str, token: str | None) -> tuple[int, dict]:
            headers = {"Authorization": "Basic " + base64.b64encode(token.encode()).decode()} if token else {}
            try:
                with urllib.request.urlopen(urllib.request.Request(url + path, headers=headers), context=context,
                                            timeout=30) as reply:  # fmt: skip
                    return reply.status, json.loads(reply.read()) if path.startswith("/api/") else {}
            except urllib.error.HTTPError as exc:
                return exc.code, json.loads(exc.read())

        assert status("/", None)[0] == 401 and status("/api/topics", None)[0] == 401
        assert status("/api/topics", "alice:wrong-secret")[0] == 401
        code, seen = status("/api/topics/seen", tokens["alice"])
        assert code == 200 and seen["name"] == "seen"
        assert status("/api/topics/hidden", tokens["alice"])[0] == 403
        assert status("/api/overview", tokens["bob"])[0] == 403
        code, everything = status("/api/topics", tokens["admin"])
        assert code == 200 and {t["name"] for t in everything} == {"hidden", "seen"}

        user, secret = tokens["alice"].split(":", 1)
        context_ = browser.new_context(
            http_credentials={"username": user, "password": secret}, ignore_https_errors=True
        )
        try:
            tab = context_.new_page()
            errors: list[str] = []
            tab.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            tab.goto(url + "/topics/seen")
            tab.wait_for_selector('body[data-loaded="/topics/seen"]', state="attached")
            assert "seen" in tab.inner_text("h1") and errors == []
        finally:
            context_.close()
    finally:
        server.stop()


def test_the_console_runs_apart_and_ends_with_its_broker(tmp_path, read_only):
    """`tidelog console` serves any broker it can reach; the one `serve` starts ends when the broker is
    killed; refusals are usage errors."""
    import signal
    import subprocess
    import sys
    import time

    port_file = str(tmp_path / "standalone.port")
    proc = subprocess.Popen(
        [sys.executable, "-m", "tidelog", "--server", read_only.server.target, "console", "--port", "0",
         "--port-file", port_file], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        url = f"http://127.0.0.1:{int(wait_for_file(port_file, proc, 30, 'tidelog console'))}"
        with urllib.request.urlopen(url + "/api/topics", timeout=30) as reply:
            assert [t["name"] for t in json.loads(reply.read())] == ["kept"]
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
    assert not os.path.exists(port_file)
    done = subprocess.run(
        [sys.executable, "-m", "tidelog", "--server", read_only.server.target, "console", "--host", "0.0.0.0"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 2 and "refusing to serve the console on 0.0.0.0" in done.stderr

    (tmp_path / "killed").mkdir()
    broker = ConsoleBroker(tmp_path / "killed", write=False)
    children = subprocess.run(["pgrep", "-P", str(broker.server.proc.pid)], capture_output=True, text=True)
    (console_pid,) = [int(p) for p in children.stdout.split()]
    broker.server.kill()
    deadline = time.monotonic() + 15
    while os.path.exists(f"/proc/{console_pid}") and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not os.path.exists(f"/proc/{console_pid}") or "Z" in open(f"/proc/{console_pid}/stat").read().split()[2]


def test_bad_input_gets_a_clear_error_and_the_console_goes_on(writable):
    def get(path: str) -> tuple[int, dict]:
        try:
            with urllib.request.urlopen(writable.url + path, timeout=30) as reply:
                return reply.status, json.loads(reply.read())
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read())

    for path, code, words in (
        ("/api/topics/orders/messages?offset=abc", 400, "offset must be a whole number"),
        ("/api/topics/orders/messages?partition=7", 400, "partition"),
        ("/api/topics/nope/messages", 404, "nope"),
        ("/api/topics/nope", 404, "nope"),
        ("/api/groups/nope", 404, "nope"),
        ("/api/nothing-here", 404, "no data"),
    ):
        status, body = get(path)
        assert status == code and words in body["error"], (path, status, body)
    status, page = get("/api/topics/orders/messages?offset=999999")
    assert status == 200 and page["records"] == []  # past the end: an empty page, not an error
    request = urllib.request.Request(
        writable.url + "/api/topics", b"{not json", {"X-Tidelog-Console": "1"}, method="POST"
    )
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request, timeout=10)
    assert refused.value.code == 400
    assert get("/api/topics")[0] == 200
