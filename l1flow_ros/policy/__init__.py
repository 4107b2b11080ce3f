"""The learning half: networks, objectives, samplers, normaliser, bundles, training (torch, no ROS).

- ``unet.py``        ConditionalUnet1D, the chunk network every method shares
- ``samplers.py``    stateless samplers (net, cond, noise[, warm]) -> chunk
- ``objectives.py``  L1 Flow, flow matching, DDPM, regression, IMLE, One-Step Flow Policy losses
- ``model.py``       PolicyModel = ObservationEncoder + U-Net + the SamplerSpec's sampler
- ``normalizer.py``  numpy normaliser, stats shipped in the manifest
- ``bundle.py``      manifest.json + weights.safetensors, fingerprint, validation
- ``config.py``      training / objective configs (no torch)
- ``train.py``       the training loop behind ``l1flow train`` and ``l1flow distill``
- ``toy.py``         the two-mode 2-D task used by tests and ``bench/bench_policy.py``
"""
