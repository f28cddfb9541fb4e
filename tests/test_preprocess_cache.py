"""Each distinct image preprocessed once per generation batch (`mmr1kit.preprocess_cache`): the output is exactly the
image processor's, and the image processor sees each distinct image once.

Runs in both tested environments: `make test` (transformers 5.23) and `make test-vllm` (`.venv-vllm`, 5.17);
`tests/test_vision_cache.py` runs the same check on every model family.
"""

import numpy as np
import pytest
from PIL import Image
from trl.data_utils import apply_chat_template, prepare_multimodal_messages

from mmr1kit.models import load_processor
from mmr1kit.preprocess_cache import PreprocessCache, same_output


def picture(seed, size=(56, 56)):
    return Image.fromarray((np.random.RandomState(seed).rand(size[1], size[0], 3) * 255).astype("uint8"))


def rows():
    """Four rows, as TRL hands them to the processor: two copies of one image (distinct objects, as the dataloader
    decodes them), a row whose image no other row has, and a row of two images, one of them shared: 5 images, 3
    distinct, 1 row sharing nothing."""
    return [[picture(0)], [picture(0)], [picture(1)], [picture(0), picture(2, (70, 56))]]


def processor_calls(processor, images):
    """TRL's two processor calls on `images`: `_tokenize_prompts`' chat template and the forward passes' call."""
    prompts = [prepare_multimodal_messages([{"role": "user", "content": "How many?"}], images=r) for r in images]
    first = processor.apply_chat_template(conversation=prompts, add_generation_prompt=True, tokenize=True,
                                          return_dict=True)
    texts = [apply_chat_template({"prompt": p}, processor)["prompt"] for p in prompts]
    return first, processor(images=images, text=texts, padding=True, return_tensors="pt")


def check_preprocessing(path, monkeypatch, cached: bool):
    processor = load_processor(path)
    plain = processor_calls(processor, rows())
    real = type(processor.image_processor).preprocess
    seen = []  # images the real image processor handles

    def counting(self, images, *args, **kwargs):
        seen.append(sum(len(x) if isinstance(x, list) else 1 for x in images))
        return real(self, images, *args, **kwargs)

    monkeypatch.setattr(type(processor.image_processor), "preprocess", counting)
    cache = PreprocessCache()
    for step in range(3):  # a generation batch each, with fresh image objects
        seen.clear()
        with cache.active(processor):
            got = processor_calls(processor, rows())
        assert all(same_output(dict(a), dict(b)) for a, b in zip(got, plain))  # exactly the processor's output
        stats = dict(cache.stats)
        cache.stats.clear()
        assert stats["images"] == 10 and stats["unshared_rows"] == 1
        # the first call of each form runs as given (it teaches and checks the layout); then 3 distinct images
        expected = 10 if step == 0 or not cached else 3
        assert stats["preprocessed"] == sum(seen) == expected, (step, stats, seen)
    assert "preprocess" not in vars(processor.image_processor)  # nothing left behind


@pytest.mark.parametrize("fixture", ["qwen_path", "llava_path"])
def test_each_distinct_image_is_preprocessed_once_and_the_output_is_the_processors(fixture, request, monkeypatch):
    check_preprocessing(request.getfixturevalue(fixture), monkeypatch, cached=True)
