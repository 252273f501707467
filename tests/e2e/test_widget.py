"""The feedback widget (feedback/static/redress/widget.js) in a real browser, embedded in a host
page served from another origin under a strict Content-Security-Policy, talking to a live
Redress with a feedback token. The screenshots land in var/screenshots/ (docs/img/widget.png
is a copy of widget.png)."""

from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from feedback.feedback_tokens import token_mint
from feedback.models import Feedback, FeedbackCategory, Prediction
from feedback.pii import pseudonymise
from feedback.services.disputes import dispute_resolve

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]
SHOTS = Path(__file__).resolve().parents[2] / "var" / "screenshots"
SECRET = "rfts_widget-e2e-secret-0123456789abcdef"


class HostPages:
    """A tiny threaded HTTP server: another origin whose page embeds the widget. Every page is
    sent with a strict CSP: no inline script or style, and only Redress for script, style and
    fetch."""

    def __init__(self, redress: str) -> None:
        self.redress = redress
        self.pages: dict[str, str] = {}
        pages = self.pages
        csp = (
            f"default-src 'none'; script-src {redress}; style-src 'self' {redress}; "
            f"connect-src {redress}; img-src 'none'; base-uri 'none'; form-action 'none'"
        )

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                body = pages.get(self.path, "not found").encode()
                self.send_response(200 if self.path in pages else 404)
                kind = "text/css" if self.path.endswith(".css") else "text/html"
                self.send_header("Content-Type", f"{kind}; charset=utf-8")
                self.send_header("Content-Security-Policy", csp)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.origin = f"http://127.0.0.1:{self.server.server_port}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def page(self, path: str, *widgets: str, css: str = "", title: str = "Support chat") -> str:
        if css:  # a stylesheet of the host's own ('self'), never inline
            self.pages[path + ".css"] = css
        self.pages[path] = (
            "<!doctype html><html lang=en><head><meta charset=utf-8>"
            f"<title>{title}</title>"
            + (f'<link rel=stylesheet href="{path}.css">' if css else "")
            + f'<script src="{self.redress}/static/redress/widget.js" defer></script></head>'
            "<body><p>Assistant: your refund request was declined.</p>"
            + "".join(widgets)
            + "</body></html>"
        )
        return self.origin + path

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def widget(api: str, token: str, **attrs: str) -> str:
    extra = "".join(f' data-{k.replace("_", "-")}="{v}"' for k, v in attrs.items())
    return f'<div data-redress-feedback data-api="{api}" data-token="{token}"{extra}></div>'


@pytest.fixture
def hosts(live_server):
    made: list[HostPages] = []

    def make() -> HostPages:
        made.append(HostPages(live_server.url))
        return made[-1]

    yield make
    for host in made:
        host.close()


@pytest.fixture
def shop(project, prediction_factory):
    """The project (with the default categories: Incorrect, Incomplete, Unsafe…) given a token
    secret, and a logged prediction."""
    project.token_secret = SECRET
    project.save(update_fields=["token_secret"])
    prediction = prediction_factory(project=project, external_id="chat-8812")
    return project, prediction


def mint(project, prediction: Prediction, *, kinds=("rating", "report"), end_user="user-42",
         issued_at: int | None = None, ttl: int = 3600) -> str:
    token, _ = token_mint(
        secret=project.token_secret, project=project.slug, prediction=prediction.external_id,
        end_user=end_user, kinds=list(kinds), issued_at=issued_at or int(time.time()),
        ttl_seconds=ttl,
    )
    return token


def allow(project, *origins: str) -> None:
    project.allowed_origins = list(origins)
    project.save(update_fields=["allowed_origins"])


def watch_csp(page) -> list[str]:
    seen: list[str] = []
    page.on("console", lambda m: "Content Security Policy" in m.text and seen.append(m.text))
    return seen


def test_thumbs_down_two_categories_and_a_comment_from_another_origin(
    live_server, page, hosts, shop
):
    project, prediction = shop
    # A category whose name looks like HTML: it must show as those characters.
    FeedbackCategory.objects.create(project=project, slug="rude", name="Rude <b>tone</b>",
                                    position=99)
    host = hosts()
    allow(project, host.origin)
    api = f"{live_server.url}/api/v1"
    url = host.page("/chat", widget(api, mint(project, prediction)))
    violations = watch_csp(page)
    posts: list[dict] = []
    page.on("request", lambda r: posts.append(r.headers) if r.method == "POST" else None)

    page.goto(url)
    page.get_by_role("button", name="Not helpful").click()
    incorrect = page.get_by_role("button", name="Incorrect")
    incorrect.wait_for()
    assert incorrect.evaluate("b => b === b.getRootNode().activeElement")  # focus moved in
    # The name is text: the literal string is shown and no <b> element is made from it.
    rude = page.get_by_role("button", name="Rude <b>tone</b>")
    assert rude.evaluate("b => b.querySelector('b') === null && b.textContent.endsWith('</b>')")
    incorrect.click()
    rude.click()
    assert incorrect.get_attribute("aria-pressed") == "true"
    assert page.get_by_role("button", name="Unsafe").get_attribute("aria-pressed") == "false"
    assert page.get_by_role("button", name="Dispute this decision").count() == 0  # not in kinds
    page.get_by_label("Tell us more").fill("Wrong again. Write to jane.doe@example.com please")
    page.get_by_role("button", name="Send").click()
    page.get_by_role("status").filter(has_text="Thank you for your feedback.").wait_for()

    row = Feedback.objects.get(project=project)
    # The token's end user (pseudonymised, as for keys), never one the page could choose.
    assert (row.kind, row.rating) == ("rating", -1)
    assert row.end_user == pseudonymise(project.secret, "user-42")
    assert row.prediction_id == prediction.pk
    assert sorted(row.categories) == ["incorrect", "rude"]
    assert "jane.doe@example.com" not in row.comment and row.comment.startswith("Wrong again.")
    assert len(posts) == 1 and posts[0]["idempotency-key"].startswith("rw-")
    assert violations == []

    # Changing their mind: thumbs up is sent as a rating of 1 (the server updates the row).
    helpful = page.get_by_role("button", name="Helpful", exact=True)
    helpful.click()
    page.get_by_role("status").filter(has_text="Thank you").wait_for()
    assert helpful.get_attribute("aria-pressed") == "true"
    _wait_for(lambda: Feedback.objects.get(project=project, kind="rating").rating == 1)
    assert Feedback.objects.filter(project=project).count() == 1

    # "Report a problem" is a report, beside the rating; the form starts empty again.
    page.get_by_role("button", name="Report a problem").click()
    assert page.get_by_role("button", name="Incorrect").get_attribute("aria-pressed") == "false"
    assert page.get_by_label("Tell us more").input_value() == ""
    page.get_by_role("button", name="Unsafe").click()
    page.get_by_role("button", name="Send").click()
    page.get_by_role("status").filter(has_text="Thank you").wait_for()
    _wait_for(lambda: Feedback.objects.filter(project=project, kind="report").exists())
    assert Feedback.objects.get(project=project, kind="report").categories == ["unsafe"]
    assert Feedback.objects.filter(project=project).count() == 2


def test_an_origin_not_allowed_fails_its_preflight(live_server, page, hosts, shop):
    project, prediction = shop
    allowed, other = hosts(), hosts()
    allow(project, allowed.origin)
    api = f"{live_server.url}/api/v1"
    token = mint(project, prediction)
    url = other.page("/chat", widget(api, token, retry_delays="100,100"))
    failed: list[str] = []
    page.on("requestfailed", lambda r: failed.append(r.url))

    page.goto(url)
    page.get_by_role("button", name="Helpful", exact=True).click()
    page.get_by_role("status").filter(has_text="Couldn't send your feedback").wait_for()
    assert page.get_by_role("button", name="Try again").is_visible()
    assert failed and all(u.endswith("/api/v1/feedback") for u in failed)
    assert Feedback.objects.count() == 0

    # The preflight itself: no CORS headers for that origin, and they are there for the allowed one.
    def preflight(origin: str) -> dict:
        req = urllib.request.Request(f"{api}/feedback", method="OPTIONS", headers={
            "Origin": origin, "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization,content-type,idempotency-key",
        })
        try:
            with urllib.request.urlopen(req, timeout=10) as res:
                return {k.lower(): v for k, v in res.headers.items()}
        except urllib.error.HTTPError as err:
            return {k.lower(): v for k, v in err.headers.items()}

    # The browser sends no token on a preflight; the server decides by the origin alone.
    assert "access-control-allow-origin" not in preflight(other.origin)
    assert preflight(allowed.origin).get("access-control-allow-origin") == allowed.origin


def test_an_expired_token_shows_the_message_until_the_page_sets_a_fresh_one(
    live_server, page, hosts, shop
):
    project, prediction = shop
    host = hosts()
    allow(project, host.origin)
    expired = mint(project, prediction, issued_at=int(time.time()) - 7200, ttl=3600)
    url = host.page("/chat", widget(f"{live_server.url}/api/v1", expired, retry_delays="100,100"))
    sent: list[str] = []
    page.on("request", lambda r: sent.append(r.url) if r.method == "POST" else None)

    page.goto(url)
    page.get_by_role("button", name="Helpful", exact=True).click()
    page.get_by_role("status").filter(has_text="This feedback form has expired").wait_for()
    page.wait_for_timeout(500)  # longer than the retry delays: nothing more is sent
    assert len(sent) == 1
    assert page.get_by_role("button", name="Helpful", exact=True).is_hidden()
    assert Feedback.objects.count() == 0

    # The app's page answers the redress:error event with a fresh token: the widget comes back
    # and sends the thumbs up it kept.
    fresh = mint(project, prediction)
    page.evaluate("t => { document.querySelector('[data-redress-feedback]').dataset.token = t }",
                  fresh)
    page.get_by_role("status").filter(has_text="Thank you").wait_for()
    assert Feedback.objects.get(project=project).rating == 1
    assert len(sent) == 2


def test_a_lost_response_is_retried_with_the_same_key_and_stored_once(
    live_server, page, hosts, shop
):
    """The first POST reaches Redress and is stored, but the browser gets a 503 instead of the
    answer (a proxy falling over). The widget says so and retries with the same
    Idempotency-Key; the server replays its first answer; one row."""
    project, prediction = shop
    host = hosts()
    allow(project, host.origin)
    url = host.page("/chat", widget(f"{live_server.url}/api/v1", mint(project, prediction),
                                    retry_delays="1500,300"))
    keys: list[str] = []

    def lose_first(route):
        request = route.request
        if request.method != "POST":
            return route.continue_()
        keys.append(request.headers["idempotency-key"])
        response = route.fetch()
        if len(keys) == 1:
            assert response.status == 201
            return route.fulfill(response=response, status=503, body=json.dumps(
                {"errors": [{"field": None, "code": "unavailable", "detail": "Try again."}]}))
        return route.fulfill(response=response)

    page.route(f"{live_server.url}/api/v1/feedback", lose_first)
    page.goto(url)
    page.get_by_role("button", name="Helpful", exact=True).click()
    page.get_by_role("status").filter(has_text="Couldn't send, retrying").wait_for()
    page.get_by_role("status").filter(has_text="Thank you").wait_for()
    assert len(keys) == 2 and keys[0] == keys[1]
    assert Feedback.objects.filter(project=project).count() == 1


def test_429_waits_as_long_as_retry_after_says(live_server, page, hosts, shop):
    project, prediction = shop
    host = hosts()
    allow(project, host.origin)
    url = host.page("/chat", widget(f"{live_server.url}/api/v1", mint(project, prediction),
                                    retry_delays="100,100"))
    times: list[float] = []

    def throttle_first(route):
        if route.request.method != "POST":
            return route.continue_()
        times.append(time.monotonic())
        if len(times) == 1:
            return route.fulfill(status=429, headers={
                "Access-Control-Allow-Origin": host.origin, "Retry-After": "2",
                "Access-Control-Expose-Headers": "Retry-After", "Content-Type": "application/json",
            }, body='{"errors": [{"field": null, "code": "throttled", "detail": "Slow down."}]}')
        return route.continue_()

    page.route(f"{live_server.url}/api/v1/feedback", throttle_first)
    page.goto(url)
    page.get_by_role("button", name="Helpful", exact=True).click()
    page.get_by_role("status").filter(has_text="Couldn't send, retrying").wait_for()
    page.get_by_role("status").filter(has_text="Thank you").wait_for()
    assert len(times) == 2 and times[1] - times[0] >= 1.9  # not the 0.1 s of its own delays
    assert Feedback.objects.filter(project=project).count() == 1


def test_offline_then_online_sends_once(live_server, page, hosts, shop):
    project, prediction = shop
    host = hosts()
    allow(project, host.origin)
    url = host.page("/chat", widget(f"{live_server.url}/api/v1", mint(project, prediction),
                                    retry_delays="20000,20000"))
    page.goto(url)
    page.context.set_offline(True)
    page.get_by_role("button", name="Not helpful").click()
    # Offline the categories cannot load; the user sends the thumbs down without them.
    page.get_by_role("button", name="Send").click()
    page.get_by_role("status").filter(has_text="Couldn't send, retrying").wait_for()
    assert Feedback.objects.count() == 0
    page.context.set_offline(False)  # the browser's "online" event: retried at once
    page.get_by_role("status").filter(has_text="Thank you").wait_for(timeout=10_000)
    row = Feedback.objects.get(project=project)
    assert (row.kind, row.rating) == ("rating", -1)


def test_a_dispute_by_keyboard_and_its_status_on_a_later_visit(live_server, page, hosts, shop):
    project, prediction = shop
    host = hosts()
    allow(project, host.origin)
    api = f"{live_server.url}/api/v1"
    kinds = ("rating", "report", "dispute")
    url = host.page("/chat", widget(api, mint(project, prediction, kinds=kinds)))

    page.goto(url)
    page.get_by_role("button", name="Helpful", exact=True).wait_for()
    # Keyboard only: Tab reaches the thumbs, then "Report a problem".
    focused = []
    for _ in range(3):
        page.keyboard.press("Tab")
        focused.append(page.evaluate(
            "() => { const a = document.activeElement.shadowRoot.activeElement;"
            " return a.getAttribute('aria-label') || a.textContent }"))
    assert focused == ["Helpful", "Not helpful", "Report a problem"]
    page.keyboard.press("Enter")
    page.get_by_role("button", name="Incorrect").wait_for()
    page.keyboard.press("Space")  # focus is on the first category
    assert page.get_by_role("button", name="Incorrect").get_attribute("aria-pressed") == "true"
    page.get_by_label("Tell us more").fill("I sent the receipt on time.")
    page.get_by_label("What should it have said").fill("Refund approved.")
    dispute = page.get_by_role("button", name="Dispute this decision")
    assert dispute.get_attribute("aria-describedby")  # the hint says what happens next
    dispute.focus()
    page.keyboard.press("Enter")
    page.get_by_role("status").filter(has_text="Your dispute was filed").wait_for()

    row = Feedback.objects.get(project=project, kind="dispute")
    assert (row.status, row.categories) == ("open", ["incorrect"])
    assert row.end_user == pseudonymise(project.secret, "user-42")
    assert row.correction == "Refund approved."
    stored = page.evaluate("() => JSON.stringify(localStorage)")
    assert f'\\"d\\":{row.pk}' in stored

    dispute_resolve(dispute_id=row.pk, upheld=True, note="You were right: refund approved.")
    # A later visit: a fresh token for the same prediction and user.
    url = host.page("/later", widget(api, mint(project, prediction, kinds=kinds)))
    page.goto(url)
    status = page.get_by_role("status")
    status.filter(has_text="Your dispute was upheld.").wait_for()
    assert "You were right: refund approved." in status.inner_text()
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.locator("[data-redress-feedback]").screenshot(path=str(SHOTS / "widget-dispute.png"))
    page.get_by_role("button", name="Report a problem").click()
    assert page.get_by_role("button", name="Dispute this decision").is_hidden()  # one per token


def test_locale_strings_and_the_users_colour_scheme(live_server, page, hosts, shop):
    project, prediction = shop
    host = hosts()
    allow(project, host.origin)
    api = f"{live_server.url}/api/v1"
    token = mint(project, prediction)
    strings = json.dumps({"question": "Hat das geholfen?"}).replace('"', "&quot;")
    url = host.page("/de", widget(api, token, locale="de", strings=strings))
    page.emulate_media(color_scheme="light")
    page.goto(url)
    page.get_by_text("Hat das geholfen?").wait_for()  # the override
    assert page.get_by_role("button", name="Problem melden").is_visible()  # the locale
    assert page.get_by_role("button", name="Nicht hilfreich").is_visible()

    def background() -> str:
        return page.evaluate(
            "() => getComputedStyle(document.querySelector('[data-redress-feedback]')"
            ".shadowRoot.querySelector('.rf')).backgroundColor"
        )

    assert background() == "rgb(255, 255, 255)"
    page.emulate_media(color_scheme="dark")
    assert background() == "rgb(21, 27, 35)"


def test_widget_screenshot_light_and_dark(live_server, page, hosts, shop):
    """docs/img/widget.png: the report form open, in the light and the dark scheme."""
    project, prediction = shop
    host = hosts()
    allow(project, host.origin)
    api = f"{live_server.url}/api/v1"
    token = mint(project, prediction, kinds=("rating", "report", "dispute"))
    panels = "".join(
        f'<div class="panel {theme}"><p>Assistant: your refund request was declined.</p>'
        f"{widget(api, token, theme=theme)}</div>"
        for theme in ("light", "dark")
    )
    url = host.page("/shot", f'<div class="panels">{panels}</div>', css=SHOT_CSS)
    page.set_viewport_size({"width": 1100, "height": 600})
    page.goto(url)
    for panel in page.locator(".panel").all():
        panel.get_by_role("button", name="Not helpful").click()
        panel.get_by_role("button", name="Incorrect").click()
        panel.get_by_role("button", name="Incomplete").click()
        panel.get_by_label("Tell us more").fill("It ignored the receipt I attached.")
    page.get_by_role("button", name="Send").first.focus()
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.locator(".panels").screenshot(path=str(SHOTS / "widget.png"))
    assert (SHOTS / "widget.png").stat().st_size > 10_000


SHOT_CSS = """
body { margin: 0; font: 15px/1.5 system-ui, sans-serif; }
.panels { display: flex; }
.panel { flex: 1; padding: 18px 22px 24px; }
.panel p { margin: 0 0 10px; }
.dark { background: #0d1117; color: #e6edf3; }
"""


def _wait_for(check, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.05)
