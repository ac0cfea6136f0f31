"""The large-scale recipe's "as released" claims, each checked against values read from the released files
(the paper's code: github.com/lt-project-repository/lt-project at 1eea15d; Kang et al.'s classifier-balancing)."""

import math

import pytest

from bagmar.config.recipe import ImageListRecipe, cosine_learning_rate


def released_rates(lr: float, epochs: int) -> list[float]:
    """The rate each epoch trains at in the released loop: run_networks.py, train() (lines 754-772 at 1eea15d),
    `for epoch in range(1, end_epoch + 1): ... self.model_optimizer_scheduler.step()` before the epoch's steps, with
    init_optimizers' torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, num_epochs, eta_min=endlr) (line 284)
    and endlr 0.0 in every large-scale config. torch's closed form: eta_min + (lr - eta_min)(1 + cos(pi t / T)) / 2
    after t steps."""
    return [lr * (1 + math.cos(math.pi * epoch / epochs)) / 2 for epoch in range(1, epochs + 1)]


# The same ten rates, as torch's CosineAnnealingLR gives them (lr 0.2, T_max 10, stepped once before each epoch).
RELEASED_LR_10_EPOCHS = [0.1951056516295154, 0.18090169943749476, 0.15877852522924732, 0.13090169943749476, 0.1,
                         0.06909830056250527, 0.04122147477075268, 0.019098300562505266, 0.0048943483704846355, 0.0]


@pytest.mark.parametrize("epochs", [10, 30])
def test_the_cosine_schedule_is_the_released_loops(epochs):
    recipe = ImageListRecipe(architecture="resnet50", epochs=epochs, batch_size=512, lr=0.2, weight_decay=1e-4)
    ours = [cosine_learning_rate(epoch, recipe) for epoch in range(1, epochs + 1)]
    assert ours == pytest.approx(released_rates(0.2, epochs), abs=1e-15)
    if epochs == 10:
        assert ours == pytest.approx(RELEASED_LR_10_EPOCHS, abs=1e-15)
    assert ours[-1] == pytest.approx(0.0, abs=1e-15) and ours[0] < 0.2


@pytest.mark.filterwarnings("ignore:Detected call of:UserWarning")
def test_the_table_of_rates_is_torchs_scheduler_stepped_as_released():
    import torch

    optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.2)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, 10, eta_min=0.0)
    rates = []
    for _ in range(10):
        scheduler.step()  # the released loop's order: step, then train the epoch
        rates.append(optimizer.param_groups[0]["lr"])
    assert rates == pytest.approx(RELEASED_LR_10_EPOCHS, abs=1e-12)


def kang_tau_norm_predictions(features, weights, tau):
    """tau_norm.py of Kang et al.'s classifier-balancing, as the paper's code holds a copy (tau_norm.py at 1eea15d,
    lines 82-117): ws = pnorm(weights, p) divides each class's weight row by its L2 norm ** p, then
    logits = dotproduct_similarity(feat, ws) = feat @ ws.T (no bias), and the prediction is the argmax."""
    import torch

    norms = torch.norm(weights, 2, 1)
    ws = weights.clone()
    for i in range(weights.size(0)):
        ws[i] = ws[i] / torch.pow(norms[i], tau)
    return torch.mm(features, ws.t()).max(dim=1).indices.numpy()


def test_tau_normalisation_drops_the_bias_as_kangs_code_does():
    import numpy as np
    import torch

    from bagmar.evaluation.evaluate import Outputs, predictions

    generator = torch.Generator().manual_seed(0)
    features = torch.randn(400, 16, generator=generator, dtype=torch.float64)
    weights = torch.randn(10, 16, generator=generator, dtype=torch.float64) * torch.linspace(0.3, 3.0, 10)[:, None]
    bias = torch.randn(10, generator=generator, dtype=torch.float64) * 2.0
    logits = (features @ weights.T + bias).numpy()  # what a training saves, beside its bias and weight norms
    saved = Outputs(logits, bias.numpy(), torch.norm(weights, 2, 1).numpy())
    taus = [0.0, 0.5, 1.0, 1.5]
    ours = predictions("tau_norm", saved, np.ones(10), taus)
    for tau, made in zip(taus, ours):
        assert np.array_equal(made, kang_tau_norm_predictions(features, weights, tau)), tau
    kept = predictions("tau_norm", saved._replace(keep_bias=True), np.ones(10), taus)
    assert np.array_equal(kept[0], logits.argmax(1))  # keep: tau = 0 is the trained model itself
    assert (kept[2] != ours[2]).mean() > 0.02  # and the bias matters: the two forms differ


@pytest.mark.parametrize("name", ["imagenet_lt", "inat2018", "places_lt"])
def test_stage2_bagmar_uses_the_released_classifiers_lambdas(name):
    """The released stage-2 configs that turn the margin on (config/ImageNet_LT/softmax_resnet50.yaml and
    config/iNaturalist18/softmax.yaml at 1eea15d: `margin_cls: true, margin_mode: pos_grad`) set no lamda_1 or
    lamda_2, so models/DotProductClassifier.py's create_model(..., lamda_1=1.0, lamda_2=1.0) applies them. Places-LT
    has no released config; it follows the other two."""
    from pathlib import Path

    import yaml

    config = yaml.safe_load((Path(__file__).parents[1] / "config" / f"{name}.yaml").read_text())
    stage2 = {key: t for key, t in config["trainings"].items() if "stage1" in t and t.get("lambda1", 0.0) != 0.0}
    assert stage2 and all((t["lambda1"], t["lambda2"]) == (1.0, 1.0) for t in stage2.values())


def released_train_transform(rgb_mean):
    """data/dataloader.py at 1eea15d, get_data_transform('train') (lines 38-42 and 55-66), copied: the released
    pipeline with timm's rand_augment_transform in place of its copy data/randaugment.py (the same transform: the
    same ops, magnitudes and draws)."""
    import torch.nn.functional as F
    from timm.data.auto_augment import rand_augment_transform
    from torchvision import transforms

    normalize = transforms.Normalize(mean=[0.485, 0.456, 0.406], std=[0.229, 0.224, 0.225])
    ra_params = dict(translate_const=int(224 * 0.45),
                     img_mean=tuple([min(255, round(255 * x)) for x in rgb_mean]), )
    return transforms.Compose([
        transforms.ToTensor(),
        transforms.Lambda(lambda x: F.pad(x.unsqueeze(0), (4, 4, 4, 4), mode='reflect').squeeze()),
        transforms.ToPILImage(),
        transforms.RandomResizedCrop(224),
        transforms.RandomHorizontalFlip(),
        transforms.ColorJitter(brightness=0.4, contrast=0.4, saturation=0.4, hue=0),
        rand_augment_transform('rand-n{}-m{}-mstd0.5'.format(2, 10), ra_params),
        transforms.ToTensor(),
        normalize,
    ])


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    """Six JPEGs of 300 x 260 .. 380 x 290 with structure (gradients and noise), listed as an image list."""
    import numpy as np
    import torch
    from torchvision.io import encode_jpeg

    from bagmar.data.image_lists import ImageList

    root = tmp_path_factory.mktemp("photos")
    rng = np.random.default_rng(0)
    names = []
    for i in range(6):
        h, w = 260 + 6 * i, 300 + 16 * i
        y, x = np.mgrid[0:h, 0:w]
        image = np.stack([x * 255 / w, y * 255 / h, (x + y) % 97 * 2.6]) + rng.normal(0, 20, (3, h, w))
        (root / f"{i}.jpg").write_bytes(encode_jpeg(torch.as_tensor(image.clip(0, 255).astype(np.uint8))).numpy())
        names.append(f"{i}.jpg")
    return root, ImageList(root / "list.txt", names, np.arange(6) % 3)


@pytest.mark.parametrize("mean", [(0.485, 0.456, 0.406), (0.466, 0.471, 0.380)])  # ImageNet's; iNaturalist's
def test_the_released_lt_augmentation_is_the_released_train_transform(photos, mean):
    """For each item, the released Compose run with torch's, random's and numpy's generators seeded as the item
    seeds them gives the very tensor that the training normalises: bit for bit, after ImageNet's normalisation."""
    import numpy as np
    import torch

    from bagmar.data.image_data import TrainImages, prepare, read_image, seeded_global_generators
    from torchvision.transforms.v2 import functional as TF

    root, image_list = photos
    images = TrainImages(root, image_list, seed=3, image_size=224, color_jitter=0.0, augment="released_lt", mean=mean)
    mean_t, std_t = images.normalisation((0.1, 0.2, 0.3), (0.5, 0.5, 0.5))  # the recipe's: not the released training's
    released = released_train_transform(list(mean))
    changed = 0
    for position, index in enumerate([0, 1, 2, 3, 4, 5, 0, 0]):
        ours, label, jitter = images[index, 7, position]
        assert (ours.dtype, ours.shape, label, jitter.tolist()) == (torch.uint8, (3, 224, 224),
                                                                    image_list.labels[index], [1.0, 1.0, 1.0])
        seeds = np.random.default_rng([3, 7, position]).integers(0, 2**32, size=3)
        with seeded_global_generators(seeds):
            expected = released(TF.to_pil_image(read_image(root, image_list, index)))
        assert torch.equal(prepare(ours[None], mean_t, std_t)[0], expected)
        changed += not torch.equal(ours, images[index, 7, position + 100][0])
    assert changed == 8  # every position draws its own augmentation


def test_the_item_seeds_leave_the_training_processs_generators_alone(photos):
    import random

    import numpy as np
    import torch

    from bagmar.data.image_data import TrainImages

    root, image_list = photos
    images = TrainImages(root, image_list, seed=0, image_size=224, color_jitter=0.0, augment="released_lt")
    states = torch.get_rng_state(), random.getstate(), np.random.get_state()[1].copy()
    first = images[2, 1, 5][0]
    assert torch.equal(torch.get_rng_state(), states[0]) and random.getstate() == states[1]
    assert np.array_equal(np.random.get_state()[1], states[2])
    torch.manual_seed(99), random.seed(99), np.random.seed(99)  # whatever the process drew before
    assert torch.equal(images[2, 1, 5][0], first)


def released_ldam_drw_rate(epoch: int, lr: float = 0.1) -> float:
    """kaidic/LDAM-DRW, cifar_train.py, adjust_learning_rate (lines 366-378), copied; called as
    `for epoch in range(args.start_epoch, args.epochs): adjust_learning_rate(optimizer, epoch, args)` (lines
    183-184) with --lr 0.1 (line 50) and --epochs 200 (line 43)."""
    epoch = epoch + 1
    if epoch <= 5:
        lr = lr * epoch / 5
    elif epoch > 180:
        lr = lr * 0.0001
    elif epoch > 160:
        lr = lr * 0.01
    else:
        lr = lr
    return lr


def test_the_released_ldam_drw_recipe_is_kaidics_every_epoch():
    """Its schedule epoch by epoch over the released 200, and the rest of the recipe from cifar_train.py: -b 128
    (line 47), --wd 2e-4 (line 54), --momentum 0.9 (line 52), RandomCrop(32, padding=4) and a flip only (lines
    141-146); DRW from 0-based epoch 160 (line 201, idx = epoch // 160), i.e. after 80 % of the epochs."""
    from bagmar.config.recipe import Recipe, learning_rate, named_recipe
    from bagmar.method.baselines import drw_active

    recipe = Recipe(**{**named_recipe("ldam_drw_released"), "epochs": 200, "loss": "ldam_drw"})
    ours = [learning_rate(e, recipe) for e in range(1, 201)]
    assert ours == pytest.approx([released_ldam_drw_rate(e) for e in range(200)], rel=1e-12, abs=0)
    assert (recipe.batch_size, recipe.weight_decay, recipe.momentum) == (128, 2e-4, 0.9)
    assert (recipe.padding, recipe.autoaugment, recipe.cutout_size) == (4, "none", 0)
    assert [drw_active(e, 200, recipe.drw_after) for e in range(1, 201)] == [(e - 1) // 160 == 1 for e in range(1, 201)]


def test_the_named_recipes_are_valid_recipe_settings():
    """Each named recipe's keys and values pass the schema's `recipe` (types, ranges, allowed values)."""
    import jsonschema

    from bagmar.config.recipe import named_recipe, recipe_names, schema

    properties = schema()["properties"]["recipe"]
    for name in recipe_names()[1:]:
        jsonschema.validate(named_recipe(name), properties)
    training_enum = schema()["definitions"]["training"]["properties"]["recipe"]["enum"]
    assert tuple(training_enum) == recipe_names()
