"""A masked edit on the edit model (tiny profile, real pipeline).

Not in the fast tier: the edit model's inpainting pipeline works at about a megapixel whatever
output size is asked for (it is brought to that size after), ~10 s a run on two cores.
"""

from __future__ import annotations

from tests.models.test_derived import assert_keeps_the_unmasked_side


def test_a_masked_edit_keeps_the_originals_own_pixels_outside_the_mask(image_edit_model):
    assert_keeps_the_unmasked_side(image_edit_model, dict(edit_size=(128, 96)))
