"""Where the tests look for Chromium (the names Debian and Google's packages install)."""

CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
