"""Model builders (ResNet, MobileNet) with SE, CBAM and AW attention variants.

Installed as ``aw_keras.applications``.
"""
