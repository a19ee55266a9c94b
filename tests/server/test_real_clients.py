"""Real HTTP clients against the server: curl, wget, urllib and http.client, byte for byte."""

from __future__ import annotations

import http.client
import os
import shutil
import subprocess
import urllib.request
from pathlib import Path

import pytest

from webserver import Server

from .conftest import NET_TIMEOUT


def need(program: str) -> str:
    path = shutil.which(program)
    if path is None:
        pytest.skip(f"{program} is not installed (.ci/run installs it)")
    return path


def run(*args: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(args, capture_output=True, timeout=NET_TIMEOUT * 2, check=False)


def test_curl_several_urls_on_one_connection(server: Server, www: Path) -> None:
    """curl fetches two URLs over one kept-alive HTTP/1.1 connection, byte-exact."""
    curl = need("curl")
    url = server.url
    result = run(curl, "-sS", "-v", url + "hello.txt", url + "data.bin")
    assert result.returncode == 0, result.stderr
    assert result.stdout == (www / "hello.txt").read_bytes() + (www / "data.bin").read_bytes()
    assert b"Re-using existing connection" in result.stderr or b"Reusing" in result.stderr


def test_curl_http10(server: Server, www: Path) -> None:
    """curl --http1.0 gets the file and the server closes."""
    curl = need("curl")
    result = run(curl, "-sS", "--http1.0", "-i", server.url + "hello.txt")
    assert result.returncode == 0
    assert result.stdout.endswith(b"\r\n\r\nhello, world\n")
    assert b"Connection: close" in result.stdout


@pytest.mark.parametrize("mode", ["--data-binary", "-T"])
def test_curl_upload(server: Server, www: Path, tmp_path: Path, mode: str) -> None:
    """curl POST --data-binary and -T (with -X POST) store the file byte-exact."""
    curl = need("curl")
    payload = tmp_path / "payload.bin"
    payload.write_bytes(os.urandom(200_000))
    source = "@" + str(payload) if mode == "--data-binary" else str(payload)
    result = run(curl, "-sS", "-X", "POST", "-D", "-", mode, source, server.url + "up/p.bin")
    assert result.returncode == 0, result.stderr
    assert b"201 Created" in result.stdout and b"Location: /up/p.bin" in result.stdout
    assert (www / "up" / "p.bin").read_bytes() == payload.read_bytes()


def test_curl_put_creates_replaces_and_honours_if_none_match(
    server: Server, www: Path, tmp_path: Path
) -> None:
    """curl -T (a PUT, with Expect: 100-continue for a large file) stores byte-exact at exactly
    that path: 201 Created, then 204 replacing it; with If-None-Match: * a second PUT is 412."""
    curl = need("curl")
    first, second = tmp_path / "first.bin", tmp_path / "second.bin"
    first.write_bytes(os.urandom(2_000_000))
    second.write_bytes(os.urandom(300_000))
    url = server.url + "put/p.bin"
    out = "%{http_code}"
    assert run(curl, "-sS", "-o", "/dev/null", "-w", out, "-T", str(first), url).stdout == b"201"
    assert (www / "put" / "p.bin").read_bytes() == first.read_bytes()
    assert run(curl, "-sS", "-o", "/dev/null", "-w", out, "-T", str(second), url).stdout == b"204"
    assert (www / "put" / "p.bin").read_bytes() == second.read_bytes()
    refused = run(
        curl, "-sS", "-o", "/dev/null", "-w", out, "-H", "If-None-Match: *", "-T", str(first), url
    )
    assert refused.stdout == b"412"
    assert (www / "put" / "p.bin").read_bytes() == second.read_bytes()


def test_http_client_put_with_if_match(server: Server, www: Path) -> None:
    """http.client PUT with the ETag a GET gave replaces the file (204); the same ETag again
    no longer matches (412)."""
    conn = http.client.HTTPConnection(*server.listen(), timeout=NET_TIMEOUT)
    try:
        conn.request("GET", "/hello.txt")
        response = conn.getresponse()
        response.read()
        etag = response.getheader("ETag")
        assert etag
        statuses = []
        for body in (b"replaced\n", b"again\n"):
            conn.request("PUT", "/hello.txt", body=body, headers={"If-Match": etag})
            response = conn.getresponse()
            response.read()
            statuses.append(response.status)
    finally:
        conn.close()
    assert statuses == [204, 412]
    assert (www / "hello.txt").read_bytes() == b"replaced\n"


def test_wget(server: Server, www: Path, tmp_path: Path) -> None:
    """wget downloads a file byte-exact."""
    wget = need("wget")
    out = tmp_path / "out.bin"
    result = run(wget, "-q", "-O", str(out), server.url + "data.bin")
    assert result.returncode == 0, result.stderr
    assert out.read_bytes() == (www / "data.bin").read_bytes()


def test_wget_404_fails(server: Server, tmp_path: Path) -> None:
    """wget sees the 404 and exits non-zero (its 'server error' status 8)."""
    wget = need("wget")
    result = run(wget, "-q", "-O", str(tmp_path / "x"), server.url + "missing")
    assert result.returncode == 8


def test_urllib(server: Server, www: Path) -> None:
    """urllib.request reads a file and a 404."""
    with urllib.request.urlopen(server.url + "data.bin", timeout=NET_TIMEOUT) as response:
        assert response.read() == (www / "data.bin").read_bytes()
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(server.url + "missing", timeout=NET_TIMEOUT)
    assert info.value.code == 404
    info.value.close()


def test_urllib_post(server: Server, www: Path) -> None:
    """urllib POST stores the body."""
    request = urllib.request.Request(server.url + "via-urllib.txt", data=b"urllib", method="POST")
    with urllib.request.urlopen(request, timeout=NET_TIMEOUT) as response:
        assert response.status == 201
        assert response.headers["Location"] == "/via-urllib.txt"
    assert (www / "via-urllib.txt").read_bytes() == b"urllib"


def test_http_client_keep_alive(server: Server, www: Path) -> None:
    """http.client reuses one connection for GET, HEAD and POST."""
    host, port = server.listen()
    conn = http.client.HTTPConnection(host, port, timeout=NET_TIMEOUT)
    try:
        conn.request("GET", "/hello.txt")
        assert conn.getresponse().read() == b"hello, world\n"
        sock = conn.sock
        conn.request("HEAD", "/data.bin")
        head = conn.getresponse()
        assert head.read() == b"" and head.headers["Content-Length"] == "16384"
        conn.request("POST", "/hc.txt", body=b"from http.client")
        assert conn.getresponse().read().startswith(b"stored hc.txt")
        assert conn.sock is sock
    finally:
        conn.close()
    assert (www / "hc.txt").read_bytes() == b"from http.client"


def test_curl_resumes_byte_exact(server: Server, www: Path, tmp_path: Path) -> None:
    """curl -C - continues a partial download with a range; the result is byte-exact."""
    curl = need("curl")
    data = os.urandom(300_000)
    (www / "big.bin").write_bytes(data)
    out = tmp_path / "big.bin"
    out.write_bytes(data[:123_457])
    result = run(curl, "-sS", "-C", "-", "-o", str(out), "-D", "-", server.url + "big.bin")
    assert result.returncode == 0, result.stderr
    assert b"206 Partial Content" in result.stdout
    assert out.read_bytes() == data


@pytest.mark.parametrize("name", ["hello.txt", "data.bin"])
def test_curl_byte_ranges(server: Server, www: Path, name: str) -> None:
    """curl -r fetches a single range byte-exact, from a cached and an uncached file."""
    curl = need("curl")
    data = (www / name).read_bytes()
    result = run(curl, "-sS", "-r", "2-9", server.url + name)
    assert result.returncode == 0, result.stderr
    assert result.stdout == data[2:10]


def test_wget_continues_byte_exact(server: Server, www: Path, tmp_path: Path) -> None:
    """wget -c continues a partial download; the result is byte-exact."""
    wget = need("wget")
    data = os.urandom(300_000)
    (www / "big.bin").write_bytes(data)
    out = tmp_path / "big.bin"
    out.write_bytes(data[:100_000])
    result = run(wget, "-c", "-O", str(out), server.url + "big.bin")
    assert result.returncode == 0, result.stderr
    assert b"206 Partial Content" in result.stderr
    assert b"doesn't seem to support byte ranges" not in result.stderr
    assert out.read_bytes() == data


def test_wget_mirrors_a_tree_through_listings(server: Server, www: Path, tmp_path: Path) -> None:
    """wget -r -np follows folder listings and mirrors every file, byte-exact, and nothing
    above the starting folder."""
    wget = need("wget")
    (www / "tree" / "sub" / "deeper").mkdir(parents=True)
    (www / "tree" / "a b.txt").write_bytes(b"a b\n")
    (www / "tree" / "sub" / "#x?.bin").write_bytes(os.urandom(5000))
    (www / "tree" / "sub" / "deeper" / "z.txt").write_bytes(b"z\n")
    out = tmp_path / "mirror"
    result = run(wget, "-r", "-np", "-nH", "-e", "robots=off", "-P", str(out), server.url + "tree/")
    assert result.returncode == 0, result.stderr
    mirrored = {
        p.relative_to(out).as_posix(): p.read_bytes()
        for p in out.rglob("*")
        if p.is_file() and p.name != "index.html"
    }
    expected = {
        p.relative_to(www).as_posix(): p.read_bytes()
        for p in (www / "tree").rglob("*")
        if p.is_file()
    }
    assert mirrored == expected


def test_curl_form_upload(server: Server, www: Path, tmp_path: Path) -> None:
    """curl -F file=@x -F other=@y stores both files byte-exact in the folder URL's folder;
    201 Created names the first; a plain field is listed, not stored."""
    curl = need("curl")
    first, second = tmp_path / "x.bin", tmp_path / "y name.txt"
    first.write_bytes(os.urandom(300_000))
    second.write_bytes(b"second\r\n--not a boundary\r\n")
    result = run(
        curl, "-sS", "-D", "-", "-F", f"file=@{first}", "-F", f"other=@{second}",
        "-F", "note=hello", server.url + "empty/",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert b"201 Created" in result.stdout and b"Location: /empty/x.bin" in result.stdout
    assert b"ignored field 'note'" in result.stdout
    assert (www / "empty" / "x.bin").read_bytes() == first.read_bytes()
    assert (www / "empty" / "y name.txt").read_bytes() == second.read_bytes()
    assert sorted(p.name for p in (www / "empty").iterdir()) == ["x.bin", "y name.txt"]


#: The longest a browser test may take, start-up of Chromium included.
BROWSER_TIMEOUT = 90


@pytest.mark.timeout(BROWSER_TIMEOUT)
def test_browser_uploads_through_the_listing_form(
    server: Server, www: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Headless Chromium opens a folder listing, picks two files in its upload form and
    submits it: both are stored byte-exact and the browser shows the answer."""
    chromium, chromedriver = need("chromium"), need("chromedriver")
    webdriver = pytest.importorskip(
        "selenium.webdriver", reason="selenium is not installed (the test extra installs it)"
    )
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    monkeypatch.setenv("SE_AVOID_STATS", "true")  # Selenium Manager: no usage report
    files = [tmp_path / "photo.bin", tmp_path / "notes é.txt"]
    files[0].write_bytes(os.urandom(150_000))
    files[1].write_text("notes\n", encoding="utf-8")
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for arg in (
        "--headless=new",
        "--no-sandbox",  # containers run as root, where Chromium's sandbox cannot start
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--no-first-run",
        "--disable-background-networking",  # traffic only to the server under test
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={tmp_path / 'profile'}",
    ):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(executable_path=chromedriver), options=options)
    try:
        driver.set_page_load_timeout(NET_TIMEOUT)
        driver.get(server.url + "empty/")
        picker = driver.find_element(By.CSS_SELECTOR, "form input[type=file]")
        picker.send_keys("\n".join(str(f) for f in files))
        driver.find_element(By.CSS_SELECTOR, "form button[type=submit]").click()
        # The click navigates: until the answer page is in, the old page's body may go stale.
        WebDriverWait(
            driver, NET_TIMEOUT, ignored_exceptions=(StaleElementReferenceException,)
        ).until(lambda d: "stored /empty/" in d.find_element(By.TAG_NAME, "body").text)
        shown = driver.find_element(By.TAG_NAME, "body").text
    finally:
        driver.quit()
    assert "stored /empty/photo.bin (150000 bytes)" in shown
    for file in files:
        assert (www / "empty" / file.name).read_bytes() == file.read_bytes()


def test_curl_form_upload_of_awkward_names(server: Server, www: Path, tmp_path: Path) -> None:
    """curl -F escapes a '"' in a file name (as %22); the file is stored under its real name,
    and a name given with ;filename=../ stays in the folder."""
    curl = need("curl")
    quoted = tmp_path / 'say "hi" é.txt'
    quoted.write_bytes(b"quoted")
    result = run(
        curl, "-sS", "-F", f"file=@{quoted}", "-F", f"f=@{quoted};filename=../../out.txt",
        server.url + "empty/",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert (www / "empty" / 'say "hi" é.txt').read_bytes() == b"quoted"
    assert (www / "empty" / "out.txt").read_bytes() == b"quoted"
    assert not (www.parent / "out.txt").exists()
