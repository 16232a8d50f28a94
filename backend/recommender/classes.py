"""The 81 class names of the class-presence vector: background first, then COCO order.

This is the matterport/pixellib order, which equals the COCO order after ``BG``; YOLOv5's
80 outputs use the same COCO order, so class id ``c`` means the same thing in every backend.
"""

CLASS_NAMES: tuple[str, ...] = (
    "BG",
    "person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck", "boat",
    "traffic light", "fire hydrant", "stop sign", "parking meter", "bench", "bird", "cat",
    "dog", "horse", "sheep", "cow", "elephant", "bear", "zebra", "giraffe", "backpack",
    "umbrella", "handbag", "tie", "suitcase", "frisbee", "skis", "snowboard", "sports ball",
    "kite", "baseball bat", "baseball glove", "skateboard", "surfboard", "tennis racket",
    "bottle", "wine glass", "cup", "fork", "knife", "spoon", "bowl", "banana", "apple",
    "sandwich", "orange", "broccoli", "carrot", "hot dog", "pizza", "donut", "cake", "chair",
    "couch", "potted plant", "bed", "dining table", "toilet", "tv", "laptop", "mouse",
    "remote", "keyboard", "cell phone", "microwave", "oven", "toaster", "sink",
    "refrigerator", "book", "clock", "vase", "scissors", "teddy bear", "hair drier",
    "toothbrush",
)

NUM_CLASSES = len(CLASS_NAMES)  # 81, including background

# pixellib spells class 80 two ways in its own lists; accept both when reading its output.
_ALIASES = {"hair dryer": "hair drier"}

_ID_BY_NAME = {name: i for i, name in enumerate(CLASS_NAMES)}


def class_id(name: str) -> int:
    """Class id (1..80) of a COCO class name; raises KeyError for an unknown name."""
    return _ID_BY_NAME[_ALIASES.get(name, name)]


def class_name(class_id_: int) -> str:
    return CLASS_NAMES[class_id_]
