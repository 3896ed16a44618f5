"""What the commands do, one library per job (export, build, doctor, validate, predict, evaluate, flops, viz, profile,
quantize, ship, serve) and the input data they share (data.py: images, datasets, preprocessing), above the runtime and beneath the CLI. A new job goes here."""
