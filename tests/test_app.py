"""The Gradio demo (app.py): a real server on 127.0.0.1 driven by headless Chromium and by gradio_client.

A tiny real training run is served; a synthetic song is uploaded through the page, the label and both
plots are checked, and a screenshot is kept (under the test's tmp dir and at /tmp/app-screenshot.png).
Chromium and its driver come from Debian (`apt-get install chromium chromium-driver`, which .ci/run
does); nothing downloads a browser. Without them the browser tests are skipped locally and fail in CI.
"""

import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

import app
from workbench import plots
import train
from workbench.synth import SAMPLE_RATE, generate_clip

SCREENSHOT = Path("/tmp/app-screenshot.png")
TIMEOUT = 90  # seconds for one classification on a loaded 2-core machine (first call pays numba's JIT)


# -- fixtures: a real model, a real server, a real browser -------------------------------------------


@pytest.fixture(scope="module")
def run_dir(quick_run):
    return quick_run


@pytest.fixture(scope="module")
def model(run_dir):
    return app.load_model(run_dir)


@pytest.fixture(scope="module")
def server(model):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    demo = app.build_demo(model)
    _, url, _ = app.launch(demo, host="127.0.0.1", port=port, prevent_thread_lock=True, quiet=True)
    yield url
    demo.close()


@pytest.fixture(scope="module")
def song(tmp_path_factory):
    path = tmp_path_factory.mktemp("songs") / "rock-song.wav"
    sf.write(path, generate_clip("rock", np.random.default_rng(7), SAMPLE_RATE, duration=11.0), SAMPLE_RATE)
    return path


@pytest.fixture(scope="module")
def not_audio(tmp_path_factory):
    """Text under an audio name: the page lets it through, so the model's loader must refuse it readably."""
    path = tmp_path_factory.mktemp("notes") / "shopping-list.wav"
    path.write_text("milk, eggs, a new guitar string\n")
    return path


@pytest.fixture(scope="module")
def browser():
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver_path = shutil.which("chromedriver")
    if not (chromium and driver_path):
        message = "Debian's chromium and chromium-driver are needed (apt-get install -y chromium chromium-driver)"
        if os.environ.get("CI"):
            pytest.fail(message + ": CI must not skip the browser test")
        pytest.skip(message)
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                "--window-size=1400,1800", "--hide-scrollbars"):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(executable_path=driver_path), options=options)
    yield driver
    driver.quit()


def _open_and_upload(browser, url, path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as EC
    from selenium.webdriver.support.ui import WebDriverWait

    browser.get(url)
    WebDriverWait(browser, 30).until(EC.presence_of_element_located((By.CSS_SELECTOR, "#song input[type=file]")))
    browser.find_element(By.CSS_SELECTOR, "#song input[type=file]").send_keys(str(path))
    status = browser.find_element(By.ID, "status")
    WebDriverWait(browser, TIMEOUT).until(lambda d: path.name in status.text)
    return status


# -- the browser ----------------------------------------------------------------------------------------


def test_browser_upload_shows_genre_timeline_and_routing(server, browser, song, model, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    status = _open_and_upload(browser, server, song)
    genres = model.config.genres
    assert "confidence" in status.text, status.text
    label = browser.find_element(By.CSS_SELECTOR, "#genre-label .output-class")  # the label's headline
    WebDriverWait(browser, 10).until(lambda d: label.text.strip())
    assert label.text.strip() in genres, label.text
    for plot in ("timeline", "gates"):  # matplotlib figures arrive as images that decoded to real pixels
        WebDriverWait(browser, 20).until(lambda d: d.execute_script(
            f"const i = document.querySelector('#{plot} img'); return i && i.complete && i.naturalWidth > 200;"))
    assert "Traceback" not in browser.page_source
    browser.execute_script("window.scrollTo(0, 0)")
    time.sleep(0.5)  # let the plots' fade-in finish before the picture
    assert browser.save_screenshot(str(tmp_path / "app.png"))
    shutil.copyfile(tmp_path / "app.png", SCREENSHOT)


def test_browser_not_audio_shows_a_readable_message(server, browser, not_audio, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    status = _open_and_upload(browser, server, not_audio)
    assert status.text.startswith("Could not classify shopping-list.wav: ") and "audio" in status.text, status.text
    assert "Traceback" not in browser.page_source and "/tmp/" not in status.text
    # A file that does not even claim to be audio: Gradio's own upload check says so in a notice.
    text = tmp_path / "notes.txt"
    text.write_text("not a song")
    browser.refresh()
    WebDriverWait(browser, 30).until(lambda d: d.find_elements(By.CSS_SELECTOR, "#song input[type=file]"))
    browser.find_element(By.CSS_SELECTOR, "#song input[type=file]").send_keys(str(text))
    WebDriverWait(browser, 20).until(lambda d: "Invalid file type: notes.txt" in d.find_element(By.TAG_NAME, "body").text)


# -- the API, on the same server ---------------------------------------------------------------------------


def test_gradio_client_classifies_and_learns_a_genre(server, song, not_audio, model):
    from gradio_client import Client, handle_file

    client = Client(server, verbose=False)
    status, label, timeline, gates = client.predict(handle_file(str(song)), api_name="/classify")
    genres = model.config.genres
    assert label["label"] in genres and "rock-song.wav" in status
    assert {c["label"] for c in label["confidences"]} == set(genres)
    assert timeline and gates  # both figures were sent

    status, label, _, _ = client.predict(handle_file(str(not_audio)), api_name="/classify")
    assert status.startswith("**Could not classify shopping-list.wav:** ") and "audio" in status and not label

    taught = client.predict("sea shanty", [handle_file(str(song))], api_name="/learn_genre")
    assert "Learned **sea shanty**" in taught, taught
    _, label, _, _ = client.predict(handle_file(str(song)), api_name="/classify")  # same session: it competes
    assert "sea shanty" in {c["label"] for c in label["confidences"]}
    fresh = Client(server, verbose=False)  # another visitor never sees it
    _, label, _, _ = fresh.predict(handle_file(str(song)), api_name="/classify")
    assert {c["label"] for c in label["confidences"]} == set(genres)


# -- the parts, without a server ------------------------------------------------------------------------


def test_bad_audio_messages_name_the_file(model, tmp_path):
    silent, short = tmp_path / "silence.wav", tmp_path / "blip.wav"
    sf.write(silent, np.zeros(3 * SAMPLE_RATE, np.float32), SAMPLE_RATE)
    sf.write(short, np.full(2000, 0.1, np.float32), SAMPLE_RATE)
    for path, words in ((silent, "silent"), (short, "too short")):
        status, label, timeline, gates = app.classify(str(path), None, model)
        assert status.startswith(f"**Could not classify {path.name}:**") and words in status, status
        assert str(tmp_path) not in status and (label, timeline, gates) == (None, None, None)
    assert "Name the new genre" in app.learn_genre(" ", [str(silent)], None, model)[0]
    assert "already a genre" in app.learn_genre(model.config.genres[0], [str(silent)], None, model)[0]


def test_genre_timeline_returns_a_figure_and_saves_a_png(tmp_path):
    genres = ["jazz", "rock"]
    windows = [{"start": 0.0, "end": 5.0, "probabilities": {"jazz": 0.9, "rock": 0.1}},
               {"start": 10.0, "end": 15.0, "probabilities": {"jazz": 0.2, "rock": 0.8}}]
    fig = plots.genre_timeline(windows, genres, path=tmp_path / "t.png")
    assert (tmp_path / "t.png").stat().st_size > 1000
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_legend().get_texts()] == genres[::-1] and ax.get_xlim() == (0, 15)
    with pytest.raises(ValueError, match="at least one window"):
        plots.genre_timeline([], genres)


def test_model_sources_and_space_folder(run_dir, tmp_path, capsys, monkeypatch):
    assert app.main(["--model", str(tmp_path / "missing")]) == 2
    assert "cannot load the model" in capsys.readouterr().err
    out = app.write_space(tmp_path / "space", "someone/music-genre-moe")
    card = (out / "README.md").read_text()
    assert "sdk: gradio" in card and "app_file: app.py" in card
    assert {"app.py", "workbench", "requirements.txt", "examples"} <= {p.name for p in out.iterdir()}
    # The Space loads models with this project's classes (no remote code): it carries what app.py imports.
    assert {"plots.py", "runs.py", "__init__.py"} <= {p.name for p in (out / "workbench").iterdir()}
    assert {"modeling.py", "song.py", "configuration.py", "decoding.py"} <= {p.name for p in out.iterdir()}
    assert "gradio" in (out / "requirements.txt").read_text()
    monkeypatch.delenv(app.ENV_VAR, raising=False)
    monkeypatch.setattr(app, "HERE", out)  # app.py as the Space runs it: the card names the model
    assert app.default_model_source() == "someone/music-genre-moe"
    monkeypatch.setenv(app.ENV_VAR, str(run_dir))
    assert app.default_model_source() == str(run_dir)


@pytest.mark.slow  # a fresh interpreter importing torch and transformers
def test_space_folder_runs_without_the_project(run_dir, tmp_path):
    """The Space holds the app and the code it imports: a model of this project loads with those classes
    (no remote code runs); its weights and config come from the model's folder or repo."""
    space = app.write_space(tmp_path / "space", "someone/music-genre-moe")
    code = ("import app; m = app.load_model(app.default_model_source()); print(type(m).__module__); "
            "print(app.genres_of(m), app.few_shot_support(m), app.example_files() != [])")
    env = {**os.environ, app.ENV_VAR: str(run_dir / "hf_model"), "HF_HUB_OFFLINE": "1", "PYTHONPATH": "",
           "HF_MODULES_CACHE": str(tmp_path / "modules")}
    r = subprocess.run([sys.executable, "-c", code], cwd=space, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.startswith("modeling"), r.stdout  # the Space's own copy of the classes, no downloaded code
    assert r.stdout.splitlines()[1] == f"{app.genres_of(app.load_model(run_dir))} (True, '') True", r.stdout
