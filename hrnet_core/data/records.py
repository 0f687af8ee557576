"""The part every keypoint dataset reader shares: a read-only sequence of person records from one annotation file.

:class:`~hrnet_core.data.coco.CocoKeypoints` and :class:`~hrnet_core.data.mpii.MpiiKeypoints` parse their own file
formats into ``self.records`` (one dict per person, keys documented by each reader) and inherit indexing, ``len``,
``repr``, :meth:`KeypointRecords.image_files` and the image-existence check from here.
"""

from __future__ import annotations

from typing import Any

from .io import check_files_exist

__all__ = ["KeypointRecords"]


class KeypointRecords:
    """Base of the dataset readers: ``reader[i]`` is person record ``i``, ``len(reader)`` the number of people.

    Subclasses set, in their ``__init__``:

    Attributes:
        ann_file: the annotation file the records come from (str; named in error messages and ``repr``).
        records: list of record dicts (``image_file`` absolute path, ``image_id``, ``center``, ``scale``,
            ``joints``, ``score``, ...; see the reader).
    """

    ann_file: str
    records: list[dict[str, Any]]

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> dict[str, Any]:
        return self.records[index]

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.ann_file!r}, records={len(self.records)})"

    def image_files(self) -> list[str]:
        """Unique image files referenced by the records, in record order."""
        return list(dict.fromkeys(r["image_file"] for r in self.records))

    def _check_image_files(self) -> None:
        """Raise :class:`~hrnet_core.data.io.AnnotationError` naming ``ann_file`` and the first missing image."""
        check_files_exist((r["image_file"] for r in self.records), self.ann_file)
