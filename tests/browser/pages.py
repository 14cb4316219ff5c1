"""Steps the browser tests share: logging in, and adding a label on the clip page with the keyboard."""


def log_in(page, platform, username, password):
    from playwright.sync_api import expect

    page.goto(f"{platform.url}/accounts/login/")
    page.get_by_label("Username").fill(username)
    page.get_by_label("Password").fill(password)
    page.keyboard.press("Enter")
    expect(page.get_by_role("heading", name="Projects")).to_be_visible()


def log_in_admin(page, platform):
    log_in(page, platform, platform.admin_user, platform.admin_password)


def add_label(page, word):
    """`+`, type the word, take the first suggestion, leave the box."""
    from playwright.sync_api import expect

    page.locator("body").press("+")
    page.keyboard.type(word)
    expect(page.locator("#suggestions li").first).to_contain_text(word)
    page.keyboard.press("Enter")
    page.keyboard.press("Escape")
