"""Metrics: writers (JSONL, TensorBoard) and console progress; image quality (PSNR, SSIM);
codebook statistics; Fréchet distance and KID on InceptionV3 (FID) or a classifier's features;
`python -m jaxlab.metrics.sample_quality` scores a sample file."""
