"""Part masks (DESIGN section 4): COCO-17 keypoints -> head, upper body, lower body, feet and whole-body masks.

* :mod:`sanet.masks.keypoints`: keypoint sources (synthetic ground truth, a COCO keypoint file) and the rule that
  keeps the person nearest the image centre; :mod:`sanet.masks.pifpaf`: OpenPifPaf as a source (imported lazily).
* :mod:`sanet.masks.part_masks`: the geometry that turns one person's keypoints into five binary masks.
* :mod:`sanet.masks.mask_files`: few large, memory-mapped files per image folder, O(1) lookup by image path.
* :mod:`sanet.masks.coverage`, :mod:`sanet.masks.preview`: the stage's metric and overlays for people.
* :mod:`sanet.masks.stage`: ``run_masks``, what `sanet masks` and the DVC stage ``masks`` run.

* :mod:`sanet.masks.errors`: the stage's errors (torch-free).

Import the modules themselves; the package re-exports nothing.
"""
