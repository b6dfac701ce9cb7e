"""Model builders (ResNet, MobileNet) with SE, CBAM and AW attention variants.

Installed as ``aw_keras.applications``.
"""

from aw_keras.applications.pretrained import from_pretrained
from aw_keras.applications.registry import get_model
from aw_keras.applications.registry import get_model_builder
from aw_keras.applications.registry import is_model
from aw_keras.applications.registry import list_models
from aw_keras.applications.registry import register_model
from aw_keras.applications.registry import register_variant
from aw_keras.applications.resnet import ResNet
from aw_keras.applications.resnet import ResNet50
from aw_keras.applications.resnet import SEResNet50
from aw_keras.applications.resnet import CBAMResNet50
from aw_keras.applications.resnet import AWResNet50
from aw_keras.applications.resnet import AWSEResNet50
from aw_keras.applications.resnet import AWCBAMResNet50
from aw_keras.applications.resnet import ResNet101
from aw_keras.applications.resnet import SEResNet101
from aw_keras.applications.resnet import CBAMResNet101
from aw_keras.applications.resnet import AWResNet101
from aw_keras.applications.resnet import AWSEResNet101
from aw_keras.applications.resnet import AWCBAMResNet101
from aw_keras.applications.resnet import ResNet152
from aw_keras.applications.resnet import SEResNet152
from aw_keras.applications.resnet import CBAMResNet152
from aw_keras.applications.resnet import AWResNet152
from aw_keras.applications.resnet import AWSEResNet152
from aw_keras.applications.resnet import AWCBAMResNet152
from aw_keras.applications.resnet import ResNetCIFAR
from aw_keras.applications.resnet import AWResNetCIFAR
from aw_keras.applications.resnet import SEResNetCIFAR
from aw_keras.applications.resnet import AWSEResNetCIFAR
from aw_keras.applications.mobilenet import MobileNet
from aw_keras.applications.mobilenet import SEMobileNet
from aw_keras.applications.mobilenet import CBAMMobileNet
from aw_keras.applications.mobilenet import AWMobileNet
from aw_keras.applications.mobilenet import AWSEMobileNet
from aw_keras.applications.mobilenet import AWCBAMMobileNet
