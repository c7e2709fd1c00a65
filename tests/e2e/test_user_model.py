"""Real browser: an uploaded state dict stays the session's model on every page and after the next click, and a
failed upload leaves the previous model selected with its error visible (issue 14, "Done when")."""
from __future__ import annotations

import re

import pytest
import torch
import torchvision

from tests.e2e.test_browser import go, sidebar, wait_idle

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

NAME = "ResNet-18 (your weights: r18.pt)"


@pytest.fixture(scope="module")
def weights_file(tmp_path_factory):
    """A ResNet-18 state dict with 3 classes and random weights (made here, nothing downloaded)."""
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("weights") / "r18.pt"
    torch.save(torchvision.models.resnet18(num_classes=3).state_dict(), path)
    return path


def _network_text(page) -> str:
    """The model the sidebar's Network list shows (its combobox input's value)."""
    return sidebar(page).get_by_role("combobox", name="Network").input_value()


def _upload(page, path, arch: str, wait: bool = True) -> None:
    sb = sidebar(page)
    weights = sb.get_by_label(re.compile(r"^Weights \("))
    if not weights.count():
        sb.get_by_text("Use your own weights").click()
        wait_idle(page)
    box = sb.get_by_role("combobox", name="Architecture")
    box.click()
    box.fill(arch)  # the list filters as one types
    page.get_by_role("option", name=arch, exact=True).click()
    wait_idle(page)
    sb.get_by_label(re.compile(r"^Weights \(")).locator('input[type="file"]').set_input_files(str(path))
    wait_idle(page)
    sb.get_by_role("button", name="Load weights").click()
    if wait:
        wait_idle(page)


def _main_text(page) -> str:
    """The page's text and the values its select boxes show (layer pickers, target class)."""
    main = page.locator('[data-testid="stMain"]')
    boxes = main.get_by_role("combobox")
    return main.inner_text() + "\n" + "\n".join(boxes.nth(i).input_value() for i in range(boxes.count()))


def test_uploaded_model_stays_on_every_page(page, weights_file, tmp_path):
    wait_idle(page)
    _upload(page, weights_file, "ResNet-18", wait=False)
    # the next click comes while the load's run is still going, as a user clicks on: Streamlit stops that run
    # at its next session-state access, and the browser still holds the Network list's old value
    page.wait_for_timeout(300)
    sidebar(page).get_by_test_id("stRadioGroup").get_by_text("Upload", exact=True).click()
    wait_idle(page)
    page.screenshot(path=str(tmp_path / "after_click.png"))
    assert NAME in _network_text(page)
    sidebar(page).get_by_test_id("stRadioGroup").get_by_text("Sample photo", exact=True).click()
    wait_idle(page)
    # page: (title, text only this ResNet-18 produces: its 3 unnamed classes or its layer names)
    checks = [("Predict", r"Top-1: class \d"), ("Filters", r"conv1: 64 filters of 3×7×7"),
              ("Activation maps", r"layer\d|conv1|bn1"), ("Receptive fields", r"layer\d|conv1"),
              ("Top patches", r"layer\d|conv1"), ("Explain", r"class \d \(#\d\)"), ("Compare", r"class \d")]
    for i, (title, pattern) in enumerate(checks):
        go(page, title)
        page.get_by_text(re.compile(rf"Model: {re.escape(NAME)}")).first.wait_for()
        assert NAME in _network_text(page), title
        assert re.search(pattern, _main_text(page)), (title, _main_text(page)[:400])
        assert page.locator('[data-testid="stException"]').count() == 0, title
        if i == 1:
            page.screenshot(path=str(tmp_path / "filters.png"))
    # and it computes with it: the explanation names the uploaded model
    go(page, "Explain")
    page.get_by_role("button", name="Run", exact=True).click()
    wait_idle(page)
    page.get_by_text(re.compile(rf"Explaining class \d .* with {re.escape(NAME)}")).wait_for()
    page.screenshot(path=str(tmp_path / "explain.png"))


def test_failed_upload_keeps_the_model_and_its_error(page, weights_file, tmp_path):
    wait_idle(page)
    _upload(page, weights_file, "ResNet-18")
    assert NAME in _network_text(page)
    _upload(page, weights_file, "AlexNet")  # the right file for the wrong architecture
    err = sidebar(page).locator('[data-testid="stAlertContentError"]')
    err.first.wait_for()
    assert "do not fit AlexNet" in err.first.inner_text() and "previous model is kept" in err.first.inner_text()
    assert NAME in _network_text(page)
    err.first.scroll_into_view_if_needed()
    page.screenshot(path=str(tmp_path / "failed.png"))
    go(page, "Filters")
    assert NAME in _network_text(page)
    assert "conv1: 64 filters" in _main_text(page)
    assert "do not fit AlexNet" in sidebar(page).locator('[data-testid="stAlertContentError"]').first.inner_text()
