#!/usr/bin/env python3
"""Scripted "browser" for Warden's OIDC end-to-end tests (stdlib only).

    python3 browser.py [--login ACCOUNT] [--cafile PEM] [--user-code CODE]
                       [--no-consent] URL

Fetches URL keeping cookies and following redirects, then keeps submitting
the forms it recognises:
  * a form with a `user_code` input (Warden's device-login page): --user-code
  * oidc-provider's dev login form (`login` + `password` inputs): --login
  * oidc-provider's consent form (hidden prompt=consent, or an action ending
    in /confirm): submitted, unless --no-consent
until it reaches a page without such a form (at most MAX_STEPS submissions).

Exit 0 if the final response is 2xx, printing the final URL and the page
text; otherwise (4xx/5xx, connection error, too many steps, or an expected
form that cannot be filled) print the status, URL and page text and exit 1.
"""

import argparse
import http.cookiejar
import ssl
import sys
import urllib.error
import urllib.parse
import urllib.request
from html.parser import HTMLParser

TIMEOUT = 15  # seconds per request
MAX_STEPS = 20


class PageParser(HTMLParser):
    """Collects forms (action, method, inputs, buttons) and the visible text."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.forms = []
        self.text = []
        self._form = None
        self._skip = 0  # inside <script>/<style>

    def handle_starttag(self, tag, attrs):
        a = {k: (v or "") for k, v in attrs}
        if tag in ("script", "style"):
            self._skip += 1
        elif tag == "form":
            self._form = {
                "action": a.get("action", ""),
                "method": a.get("method", "get").lower(),
                "inputs": [],  # (name, type, value) in document order
                "buttons": [],  # (name, value) of named submit buttons
            }
            self.forms.append(self._form)
        elif self._form is not None and tag in ("input", "select", "textarea"):
            typ = a.get("type", "text").lower()
            if tag == "input" and typ == "submit":
                if a.get("name"):
                    self._form["buttons"].append((a["name"], a.get("value", "")))
            elif a.get("name"):
                self._form["inputs"].append((a["name"], typ, a.get("value", "")))
        elif self._form is not None and tag == "button" and a.get("name"):
            if a.get("type", "submit").lower() == "submit":
                self._form["buttons"].append((a["name"], a.get("value", "")))

    def handle_endtag(self, tag):
        if tag in ("script", "style") and self._skip:
            self._skip -= 1
        elif tag == "form":
            self._form = None

    def handle_data(self, data):
        if not self._skip and data.strip():
            self.text.append(" ".join(data.split()))


class RecordingRedirectHandler(urllib.request.HTTPRedirectHandler):
    """Remembers the last redirect target, for error messages."""

    last = None

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        self.last = newurl
        return super().redirect_request(req, fp, code, msg, headers, newurl)


def parse(body):
    p = PageParser()
    p.feed(body)
    p.close()
    return p


def fail(status, url, body, reason=""):
    print(f"FAILED {status} {url}" + (f" ({reason})" if reason else ""))
    print("\n".join(parse(body).text) if body else "")
    sys.exit(1)


def choose_form(forms, args):
    """Return (form, fields) for the form to submit next, or None."""
    for form in forms:
        names = {n for n, _, _ in form["inputs"]}
        values = {n: v for n, _, v in form["inputs"]}
        fields = [(n, v) for n, t, v in form["inputs"]
                  if t not in ("checkbox", "radio") or v]
        if "user_code" in names:
            if args.user_code is None:
                return "missing", "device-login form needs --user-code"
            fields = [(n, args.user_code if n == "user_code" else v) for n, v in fields]
        elif "login" in names and "password" in names:
            if args.login is None:
                return "missing", "login form needs --login"
            fill = {"login": args.login, "password": "any-password"}
            fields = [(n, fill.get(n, v)) for n, v in fields]
        elif values.get("prompt") == "consent" or form["action"].rstrip("/").endswith("/confirm"):
            if args.no_consent:
                return None
        else:
            continue
        # Include the first named submit button, like a browser clicking it.
        return form, fields + form["buttons"][:1]
    return None


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--login", help="account id for the oidc-provider login form")
    ap.add_argument("--cafile", help="CA bundle (PEM) to verify https against")
    ap.add_argument("--user-code", help="code for the device-login form")
    ap.add_argument("--no-consent", action="store_true",
                    help="stop at the consent form instead of submitting it")
    ap.add_argument("url")
    args = ap.parse_args()

    ctx = ssl.create_default_context(cafile=args.cafile)
    redirects = RecordingRedirectHandler()
    opener = urllib.request.build_opener(
        redirects,
        urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar()),
        urllib.request.HTTPSHandler(context=ctx),
        # Never use an environment proxy, even for 127.0.0.1.
        urllib.request.ProxyHandler({}),
    )
    opener.addheaders = [("User-Agent", "warden-test-browser/1")]

    url, data = args.url, None
    for _ in range(MAX_STEPS + 1):
        # urllib follows 301/302/303/307/308 itself (POST becomes GET on 303).
        req = urllib.request.Request(url, data=data)
        redirects.last = None
        if data is not None:
            req.add_header("Content-Type", "application/x-www-form-urlencoded")
        try:
            with opener.open(req, timeout=TIMEOUT) as resp:
                status, url = resp.status, resp.geturl()
                body = resp.read().decode("utf-8", "replace")
        except urllib.error.HTTPError as e:
            fail(e.code, e.geturl() or url, e.read().decode("utf-8", "replace"))
        except (urllib.error.URLError, OSError) as e:
            fail("ERROR", redirects.last or url, "", str(getattr(e, "reason", e)))

        print(f"step: {status} {url}", file=sys.stderr)
        chosen = choose_form(parse(body).forms, args)
        if chosen is None:
            if not 200 <= status < 300:
                fail(status, url, body)
            print(url)
            print("\n".join(parse(body).text))
            return 0
        if chosen[0] == "missing":
            fail(status, url, body, chosen[1])
        form, fields = chosen
        target = urllib.parse.urljoin(url, form["action"] or url)
        encoded = urllib.parse.urlencode(fields)
        if form["method"] == "post":
            url, data = target, encoded.encode()
        else:
            url, data = urllib.parse.urljoin(target, "?" + encoded), None
    fail(status, url, body, f"more than {MAX_STEPS} form submissions")


if __name__ == "__main__":
    sys.exit(main())
