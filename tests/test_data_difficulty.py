import json

import pytest

from mmr1kit.data import load_dataset
from mmr1kit.data.difficulty import measure_difficulty, store_difficulty
from mmr1kit.data.ordering import prompt_order


@pytest.mark.slow
def test_measured_difficulty_orders_a_curriculum(qwen_path, counting_dir, tmp_path):
    ds = load_dataset(counting_dir, "test").select(range(8))
    difficulty = measure_difficulty(qwen_path, ds, "counting", num_samples=2, max_new_tokens=4)
    assert set(difficulty) == set(ds["id"]) and all(0.0 <= d <= 1.0 for d in difficulty.values())
    # an untrained tiny model fails everything: every row is maximally hard
    assert set(difficulty.values()) == {1.0}


def test_store_difficulty_writes_a_loadable_copy(counting_dir):
    source = counting_dir / "test.json"
    ids = [r["id"] for r in json.loads(source.read_text())]
    values = {i: (k % 5) / 4 for k, i in enumerate(ids)}
    out = store_difficulty(source, counting_dir / "test_measured.json", values)
    ds = load_dataset(out)
    assert ds["difficulty"] == [values[i] for i in ds["id"]]
    order = prompt_order("curriculum", ds["difficulty"])
    assert [ds["difficulty"][i] for i in order] == sorted(ds["difficulty"])
    with pytest.raises(ValueError, match="no measured difficulty for 1 rows"):
        store_difficulty(source, counting_dir / "x.json", {i: 0.0 for i in ids[1:]})
    with pytest.raises(ValueError, match="next to"):
        store_difficulty(source, counting_dir / "sub" / "x.json", values)
