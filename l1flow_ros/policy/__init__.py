"""The learning half: networks, objectives, samplers, normaliser, bundles, training (torch, no ROS).

- ``methods/``       one module per method (L1 Flow, IMLE, One-Step Flow Policy, flow matching,
                     diffusion, regression): its loss, its samplers, its defaults; and the
                     registry (``methods/__init__.py``) every tool enumerates
- ``unet.py``        ConditionalUnet1D, the chunk network every method shares
- ``samplers.py``    what the samplers share (conventions, warm-start point)
- ``objectives.py``  what the losses share (noise draws, the distribution of t, teacher samples)
- ``model.py``       PolicyModel = ObservationEncoder + U-Net + the SamplerSpec's sampler
- ``normalizer.py``  numpy normaliser, stats shipped in the manifest
- ``model_config.py`` the model's configs: encoder, U-Net, prediction (no torch)
- ``manifest.py``    manifest.json: reading, validation, fingerprint (no torch: the executor reads it)
- ``bundle.py``      saving and loading a bundle's weights with the model (torch)
- ``config.py``      training configs (no torch)
- ``train.py``       the training loop behind ``l1flow train`` and ``l1flow distill``
- ``toy.py``         the two-mode 2-D task used by tests and ``bench/bench_policy.py``
"""
