"""Which counters each kind of edit moves (no Qt)."""
from fssgui.edit_state import Change, EditState


def test_a_region_edit_is_no_input_of_the_prediction():
    state = EditState()
    state.changed(Change.REGION)
    assert state.revision == 1 and state.prediction_revision == 0 and state.dirty and state.support_version == 0


def test_support_edits_change_every_result_and_the_label_version():
    state = EditState()
    state.changed(Change.SUPPORTS)
    state.changed(Change.SUPPORTS)
    assert (state.revision, state.prediction_revision, state.support_version) == (2, 2, 2) and state.dirty


def test_the_model_is_an_input_but_no_unsaved_edit_and_notes_are_no_input():
    state = EditState()
    state.changed(Change.MODEL)
    assert state.revision == 1 and state.prediction_revision == 1 and not state.dirty
    state.changed(Change.NOTES)
    assert state.revision == 1 and state.dirty


def test_a_new_episode_outdates_everything():
    state = EditState(support_version=3, dirty=True)
    state.new_episode()
    assert state.episode_serial == 1 and state.support_version == 0 and not state.dirty
    assert state.revision == 1 and state.prediction_revision == 1
