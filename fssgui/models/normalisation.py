"""The input normalisations of the models (mean and std on 0..1 RGB), torch-free: the registry
entries carry them and the window lists the entries before torch is imported."""

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
#: EfficientNet-Lite preprocessing: ``(x - 127) / 128`` on 0..255, i.e. this mean and std on 0..1
EFFICIENTNET_LITE_MEAN = (127.0 / 255.0,) * 3
EFFICIENTNET_LITE_STD = (128.0 / 255.0,) * 3
