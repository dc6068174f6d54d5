"""What the stages agree on, in small torch-free modules that both sides import: the five parts, the COCO-17
keypoints, the benchmark folders, the model variants, the search spaces, the Kubeflow pipelines, the files each stage
writes and reads (`files`), and the reader of those results (`results`). The package re-exports nothing.
"""
