"""Converters from the published layouts of public datasets to mmr1kit's canonical MMR1 rows.

| name                   | dataset (published layout)                                  | task      | function                  |
|------------------------|-------------------------------------------------------------|-----------|---------------------------|
| `clevr_cogen_a_train`  | R1-V CLEVR-CoGenT-A counting (HF parquet)                   | counting  | `convert_clevr_cogen`     |
| `superclevr`           | SuperCLEVR-200 (R1-V eval JSONL + image folder)             | counting  | `convert_superclevr`      |
| `countbenchqa`         | CountBenchQA (HF parquet)                                   | counting  | `convert_countbenchqa`    |
| `pixmo_count`          | PixMo-Count (HF parquet of URLs + downloaded images)        | counting  | `convert_pixmo_count`     |
| `refcoco`              | RefCOCO / RefCOCO+ / RefCOCOg eval splits (lmms-lab parquet) | grounding | `convert_refcoco`        |
| `refer`                | RefCOCO / RefCOCO+ / RefCOCOg all splits (`refer` pickles)  | grounding | `convert_refer`           |
| `textvqa`              | TextVQA (HF parquet)                                        | ocr       | `convert_textvqa`         |
| `coco_detection`       | COCO 2017 detection (annotation JSON + image folder)        | detection | `convert_coco_detection`  |
| `mathvista`            | MathVista testmini (HF parquet)                             | math      | `convert_mathvista`       |
| `mathverse`            | MathVerse testmini, one problem version (HF parquet / JSON) | math      | `convert_mathverse`       |
| `geometry3k`           | Geometry3K, hiyouga/geometry3k (HF parquet)                 | math      | `convert_geometry3k`      |

Each writes `<out_dir>/<split>.json` and `<out_dir>/images/<split>/` (see `mmr1kit.data.converters_base`), loadable
with `mmr1kit.data.load_dataset(out_dir, split)` or through the dataset's card in `data_cards/`, whose
`mmr1kit.data_dir` names the folder. The cards list the exact published field names each converter assumes and
where they are documented.

Example:
```python
>>> from mmr1kit.data.converters import convert
>>> convert("countbenchqa", "downloads/CountBenchQA", "data/countbenchqa", split="test")
ConversionResult(path=PosixPath('data/countbenchqa/test.json'), rows=491, images=491, skipped={})
```
"""

from mmr1kit.data.converters_base import (
    ConversionResult,
    ImageStore,
    Skipped,
    clip_box,
    encode_box,
    iter_source,
    write_split,
    xywh_to_xyxy,
)
from mmr1kit.data.converters_boxes import convert_coco_detection, convert_refcoco, convert_refer
from mmr1kit.data.converters_counting import (
    convert_clevr_cogen,
    convert_countbenchqa,
    convert_pixmo_count,
    convert_superclevr,
)
from mmr1kit.data.converters_math import convert_geometry3k, convert_mathverse, convert_mathvista
from mmr1kit.data.converters_ocr import convert_textvqa

__all__ = [
    "CONVERTERS",
    "ConversionResult",
    "ImageStore",
    "Skipped",
    "clip_box",
    "convert",
    "convert_clevr_cogen",
    "convert_coco_detection",
    "convert_countbenchqa",
    "convert_geometry3k",
    "convert_mathverse",
    "convert_mathvista",
    "convert_pixmo_count",
    "convert_refcoco",
    "convert_refer",
    "convert_superclevr",
    "convert_textvqa",
    "encode_box",
    "iter_source",
    "write_split",
    "xywh_to_xyxy",
]

CONVERTERS = {
    "clevr_cogen_a_train": convert_clevr_cogen,
    "superclevr": convert_superclevr,
    "countbenchqa": convert_countbenchqa,
    "pixmo_count": convert_pixmo_count,
    "refcoco": convert_refcoco,
    "refer": convert_refer,
    "textvqa": convert_textvqa,
    "coco_detection": convert_coco_detection,
    "mathvista": convert_mathvista,
    "mathverse": convert_mathverse,
    "geometry3k": convert_geometry3k,
}


def convert(name: str, *args, **kwargs) -> ConversionResult:
    """Run the converter called `name` (a key of `CONVERTERS`) with the given arguments.

    Raises:
        ValueError: `name` is not a known converter (the message lists them).
    """
    if name not in CONVERTERS:
        raise ValueError(f"unknown converter {name!r}; available: {', '.join(CONVERTERS)}")
    return CONVERTERS[name](*args, **kwargs)
