"""Video generation metrics: FVD/KVD on I3D features, the C3D Inception Score, protocols.

Modules: ``i3d`` (FVD network, ``load_i3d``), ``c3d`` (UCF-101 classifier, ``load_c3d``),
``metrics`` (``frechet_distance``, ``kernel_distance``, ``inception_score``), ``features``
(``FeatureNetwork``, sharded ``extract_features``), ``protocols`` (presets, ``describe``),
``resize`` (the references' resize conventions); the evaluate mode above them: ``evaluate``
(its steps), ``streams`` (generated and real videos), ``report`` (plan and result file);
``bench_i3d`` (I3D throughput). The weight-file readers are ``vfjax.weights``.
"""
