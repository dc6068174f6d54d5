"""The COCO-17 person keypoints: their order and skeleton, and the file the synthetic benchmark stores them in.

The synthetic generator writes keypoints in this order, the mask stage reads them (from that file, a COCO keypoint
file or OpenPifPaf, which uses the same order) and turns them into part masks: both import them from here.
"""

from __future__ import annotations

KEYPOINTS_FILE = "keypoints_coco17.json"
"""The ground-truth keypoints inside each synthetic benchmark folder (COCO format, image paths relative to it)."""

COCO_KEYPOINTS = (
    "nose",
    "left_eye",
    "right_eye",
    "left_ear",
    "right_ear",
    "left_shoulder",
    "right_shoulder",
    "left_elbow",
    "right_elbow",
    "left_wrist",
    "right_wrist",
    "left_hip",
    "right_hip",
    "left_knee",
    "right_knee",
    "left_ankle",
    "right_ankle",
)
COCO_SKELETON = (
    (16, 14),
    (14, 12),
    (17, 15),
    (15, 13),
    (12, 13),
    (6, 12),
    (7, 13),
    (6, 7),
    (6, 8),
    (7, 9),
    (8, 10),
    (9, 11),
    (2, 3),
    (1, 2),
    (1, 3),
    (2, 4),
    (3, 5),
    (4, 6),
    (5, 7),
)
KP = {name: i for i, name in enumerate(COCO_KEYPOINTS)}
"""Name -> index in `COCO_KEYPOINTS`."""
