"""The synthetic benchmark: six real benchmark layouts filled with procedurally drawn pedestrians.

Real ReID benchmarks cannot be downloaded on build machines and their licences forbid redistribution, so the project
generates its own small benchmark in exactly the real layouts (DESIGN sections 2 and 3); the same loaders, mask stage
and evaluation protocols then run on it unchanged.

What makes it a re-identification problem rather than a colour lookup:

* an identity fixes a combination of cues drawn from small palettes: top colour and pattern (solid, stripes, checks,
  two-tone), sleeve length, bottom colour and style (trousers, shorts, skirt), shoes, skin and hair, body build and
  height, and an accessory (backpack, shoulder bag, hat). Palettes are small on purpose, so many identities share a
  top colour and only the combination separates them;
* a camera fixes background (gradient and texture), lighting (brightness and colour cast), blur, sensor noise and a
  preferred viewpoint (front, back, left or right side), so the same person looks different across cameras;
* partial images are crops of a random vertical extent (the scale variation that SANet targets) and occluded images
  paste an occluder over part of the body.

Every image gets COCO-17 keypoints (visibility 2: visible, 1: labelled but hidden by an occluder or the body's own far
side, 0: outside the image) in `keypoints_coco17.json` inside each benchmark folder; image paths in it are relative
to that folder. The generator is deterministic: each image draws from its own seed sequence
(seed, benchmark, identity, image), and JPEG encoding uses fixed settings, so a seed gives byte-identical files.

The package: `people` (identities, cameras, the painter, occluders, crops), `layouts` (the benchmark folders and
`write_synthetic`), `contact_sheet` (the preview picture).
"""
