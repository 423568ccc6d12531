"""Settings without Qt: bad values in the file fall back to the defaults."""
from fssgui.settings import Settings


def test_settings_file_with_bad_values_falls_back_to_defaults(home):
    Settings.path().parent.mkdir(parents=True, exist_ok=True)
    Settings.path().write_text('{"brush_size": "huge", "colormap": "magma", "unknown": 1}', encoding="utf-8")
    loaded = Settings.load()
    assert loaded.brush_size == Settings().brush_size and loaded.colormap == "magma"
    assert loaded.checkpoint_dir.endswith("checkpoints")
