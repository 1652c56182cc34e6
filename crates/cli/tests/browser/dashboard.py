"""The dashboard in a real browser: headless Chromium driven by Selenium, against a
`skiff demo` the Rust test started (crates/cli/tests/dashboard.rs).

It does what the issue asks a person can do: open the page, see a leader, kill the leader
with its button, see another node become leader, put a key through the page's form, see
the entry committed in every running node's log view, restart the killed node and see it
catch up; and it saves a screenshot of each of those states.

    python dashboard.py URL SCREENSHOT_DIR n1=ADDRESS,n2=ADDRESS,...

Exit code 0 when every check passed; otherwise the failed check's message, the browser's
console and a screenshot of the page (failure.png) say what went wrong.
"""

import json
import os
import sys
import time
import urllib.error
import urllib.request

from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys

ROLES = {"leader", "follower", "candidate", "pre-candidate", "learner", "paused", "unreachable", "killed"}
WAIT = 20.0  # seconds: an election takes about one, a restart a few


def browser():
    options = webdriver.ChromeOptions()
    options.binary_location = os.environ.get("SKIFF_CHROMIUM", "/usr/bin/chromium")
    for flag in ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1280,1000"]:
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    service = Service(os.environ.get("SKIFF_CHROMEDRIVER", "/usr/bin/chromedriver"))
    return webdriver.Chrome(service=service, options=options)


class Page:
    def __init__(self, driver, shots):
        self.driver = driver
        self.shots = shots
        self.taken = []

    def shot(self, name, show=None):
        """Saves a screenshot, scrolled to the element with id `show` (else the top)."""
        if show:
            element = self.driver.find_element(By.ID, show)
            self.driver.execute_script("arguments[0].scrollIntoView({block: 'start'})", element)
        else:
            self.driver.execute_script("window.scrollTo(0, 0)")
        time.sleep(0.2)
        path = os.path.join(self.shots, name + ".png")
        self.driver.save_screenshot(path)
        self.taken.append(path)

    def wait(self, what, check, timeout=WAIT):
        """Polls `check` until it returns something truthy; fails with `what`."""
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            try:
                last = check()
            except Exception as error:  # the page redraws: an element may go stale
                last = error
            if last and not isinstance(last, Exception):
                return last
            time.sleep(0.1)
        raise AssertionError(f"waited {timeout:.0f} s for {what}; last saw {last!r}")

    def cards(self):
        """Node id -> (role attribute, role text) of every node card on the page."""
        found = {}
        for card in self.driver.find_elements(By.CSS_SELECTOR, "[data-node][data-role]:not([data-action])"):
            role_text = card.find_element(By.CSS_SELECTOR, ".role").text.strip().lower()
            found[card.get_attribute("data-node")] = (card.get_attribute("data-role"), role_text)
        return found

    def leader(self, among=None):
        """The one node the page shows as leader (of the running ones), or None."""
        cards = self.cards()
        leaders = [node for node, (role, _) in cards.items() if role == "leader" and (among is None or node in among)]
        return leaders[0] if len(leaders) == 1 else None

    def click(self, action, node=None):
        selector = f'[data-action="{action}"]' + (f'[data-node="{node}"]' if node else "")
        button = self.driver.find_element(By.CSS_SELECTOR, selector)
        self.driver.execute_script("arguments[0].scrollIntoView({block: 'center'})", button)
        button.click()

    def log_row(self, node):
        """(index, term, committed) of each cell of `node`'s log view."""
        cells = self.driver.find_elements(By.CSS_SELECTOR, f'[data-log-node="{node}"] [data-index]')
        return [
            (int(cell.get_attribute("data-index")), int(cell.get_attribute("data-term")),
             cell.get_attribute("data-committed") == "true")
            for cell in cells
        ]


def http_get(url):
    """(status, body); (0, error) when the node does not answer."""
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()
    except OSError as error:
        return 0, str(error)


def main():
    url, shots = sys.argv[1], sys.argv[2]
    addresses = dict(pair.split("=", 1) for pair in sys.argv[3].split(","))
    os.makedirs(shots, exist_ok=True)
    driver = browser()
    page = Page(driver, shots)
    try:
        run(page, url, addresses)
    except BaseException:
        page.shot("failure")
        for entry in driver.get_log("browser"):
            print("browser console:", entry.get("level"), entry.get("message"), file=sys.stderr)
        raise
    finally:
        driver.quit()
    print(json.dumps({"screenshots": page.taken}))


def run(page, url, addresses):
    driver = page.driver
    driver.get(url)
    assert "Skiff" in driver.title, f"the page's title names Skiff: {driver.title!r}"

    # 1. Every node shows up, with a role in words, and one of them leads.
    cards = page.wait("three node cards", lambda: (lambda c: c if len(c) >= 3 else None)(page.cards()))
    for node, (role, text) in cards.items():
        assert role in ROLES, f"{node}'s role attribute is a role word: {role!r}"
    old = page.wait("the page to show one leader", page.leader)
    role_text = page.cards()[old][1]
    assert "leader" in role_text, f"the leader's card says so in words, not only by colour: {role_text!r}"
    page.shot("1-elected")

    # 2. Kill the leader with its button: another node becomes leader, in the page.
    page.click("kill", old)
    others = [node for node in cards if node != old]
    new = page.wait("another node to become leader after the kill", lambda: page.leader(among=others))
    assert new != old
    killed_role = page.wait(
        f"{old}'s card to show it is down",
        lambda: (lambda r: r if r in ("killed", "unreachable") else None)(page.cards()[old][0]),
    )
    page.shot("2-new-leader")

    # 3. A key put through the page's form, read back through it and through the API.
    key, value = "dashboard/greeting", "hello from the browser"
    driver.find_element(By.ID, "kv-key").clear()
    driver.find_element(By.ID, "kv-key").send_keys(key)
    driver.find_element(By.ID, "kv-value").clear()
    driver.find_element(By.ID, "kv-value").send_keys(value)
    driver.find_element(By.ID, "kv-put").click()
    page.wait("the put's result", lambda: driver.find_element(By.ID, "kv-result").text.strip())
    driver.find_element(By.ID, "kv-get").click()
    page.wait("the get to show the value", lambda: value in driver.find_element(By.ID, "kv-result").text)
    # And through the API, on every running node (a stale read: each node's own copy, once applied).
    for node in others:
        address = addresses[node]
        status, body = page.wait(
            f"the key on {node}", lambda: (lambda r: r if r[0] == 200 else None)(http_get(f"http://{address}/v1/kv/{key}?raw&stale"))
        )
        assert body == value, f"the key put through the page is in {node}'s store: {body!r}"

    # 4. The entry is committed on every running node's log view, the same index and term.
    def committed_everywhere():
        rows = {node: page.log_row(node) for node in others}
        lasts = {node: row[-1] for node, row in rows.items() if row}
        if len(lasts) != len(others) or len(set(lasts.values())) != 1:
            return None
        index, term, committed = next(iter(lasts.values()))
        return (index, term) if committed else None

    index, term = page.wait("the put's entry committed in every running node's log view", committed_everywhere)
    page.shot("3-committed", show="h-log")

    # 5. Restart the killed node, from the keyboard (the button focused, Enter pressed): it
    # comes back as a follower and its log catches up.
    restart = driver.find_element(By.CSS_SELECTOR, f'[data-action="restart"][data-node="{old}"]')
    driver.execute_script("arguments[0].focus()", restart)
    assert driver.switch_to.active_element == restart, "the restart button takes the keyboard's focus"
    restart.send_keys(Keys.ENTER)
    page.wait(f"{old} back as a follower", lambda: page.cards()[old][0] == "follower")
    page.wait(
        f"{old}'s log view to catch up to entry {index}",
        lambda: any(i >= index and c for (i, t, c) in page.log_row(old)),
    )
    page.shot("4-restarted")
    page.shot("4-restarted-events", show="h-events")

    # 6. Every control says what it does, in words a screen reader reads out.
    for control in driver.find_elements(By.CSS_SELECTOR, "button, input"):
        name = (control.get_attribute("aria-label") or control.text or "").strip()
        if control.tag_name == "input":
            control_id = control.get_attribute("id")
            labels = driver.find_elements(By.CSS_SELECTOR, f'label[for="{control_id}"]') if control_id else []
            name = name or " ".join(label.text for label in labels).strip()
        if control.is_displayed():
            assert name, f"a control without a name: {control.get_attribute('outerHTML')[:200]}"

    # 7. The events list tells the story in words.
    events = driver.find_element(By.ID, "events").text
    for words in ["became leader", "started an election"]:
        assert words in events, f"the events list says {words!r}:\n{events[:2000]}"

    # 8. A phone's width: the same page, stacked.
    driver.set_window_size(390, 844)
    time.sleep(0.5)
    page.shot("5-phone")
    print(f"killed {old} ({killed_role}), {new} took over, entry {index} of term {term} committed everywhere",
          file=sys.stderr)


if __name__ == "__main__":
    main()
