"""Back-of-the-envelope numbers for LLMs: memory for the parameters, compute for training and inference."""

import numbers

from llmlab.checks import CourseError, check_number

MAX_COUNT = 1e18  # parameters or tokens: far beyond any model, and the products below stay finite
BYTES_PER_PARAMETER = {"fp32": 4.0, "fp16 / bf16": 2.0, "int8": 1.0, "int4": 0.5}

# Llama 2 70B, as its training was described publicly (and retold in many introductions to LLMs).
LLAMA2_70B = {
    "parameters": 70e9,
    "training tokens": 2e12,
    "training text (TB)": 10,
    "GPUs": 6000,
    "days": 12,
    "cost (USD)": 2e6,
}


def memory_gb(parameters: float, precision: str) -> float:
    """Gigabytes (10^9 bytes) to hold the parameters alone (no activations, no KV cache) at a precision."""
    check_number("parameters", parameters, minimum=0, maximum=MAX_COUNT)
    if not isinstance(precision, str) or precision not in BYTES_PER_PARAMETER:
        raise CourseError(f"unknown precision {precision!r}; choose one of {list(BYTES_PER_PARAMETER)}")
    return parameters * BYTES_PER_PARAMETER[precision] / 1e9


def training_flops(parameters: float, tokens: float) -> float:
    """About 6 FLOPs per parameter per training token: 2 for the forward pass, 4 for the backward pass."""
    check_number("parameters", parameters, minimum=0, maximum=MAX_COUNT)
    check_number("tokens", tokens, minimum=0, maximum=MAX_COUNT)
    return 6 * parameters * tokens


def inference_flops_per_token(parameters: float) -> float:
    """About 2 FLOPs per parameter for each generated token (one multiply and one add per weight)."""
    check_number("parameters", parameters, minimum=0, maximum=MAX_COUNT)
    return 2 * parameters


def check_memory_exercise(fn) -> bool:
    """Checker for notebook 00's exercise: fn(parameters, bits) returns gigabytes."""
    cases = [(13e9, 4, 6.5), (7e9, 16, 14.0), (70e9, 8, 70.0), (1.5e9, 32, 6.0)]
    try:
        for parameters, bits, expected in cases:
            got = fn(parameters, bits)
            if isinstance(got, bool) or not isinstance(got, numbers.Real):
                print(f"✗ {parameters / 1e9:g}B parameters at {bits} bits: expected a number of GB, got {got!r:.40}")
                return False
            if not abs(got - expected) <= 1e-6 * expected:  # written so that a NaN answer fails too
                print(f"✗ {parameters / 1e9:g}B parameters at {bits} bits: expected {expected} GB, got {got}")
                print("  hint: bits / 8 gives bytes per parameter; 1 GB = 1e9 bytes")
                return False
    except NotImplementedError:
        print("… not done yet: fill in the function (hint: parameters × bits / 8 bytes, in units of 1e9)")
        return False
    except Exception as error:  # the learner's bug, in one line
        print(f"✗ your function raised {type(error).__name__}: {error}")
        return False
    print("✓ correct: e.g. 13B parameters at 4 bits take 6.5 GB")
    return True


def check_fit_exercise(fn) -> bool:
    """Checker for notebook 00's exercise: fn(memory_gb, bits, reserve) returns the most parameters that fit."""
    cases = [(16, 16, 0.2, 6.4e9), (16, 4, 0.2, 25.6e9), (80, 8, 0.25, 60e9), (8, 3, 0.0, 64e9 / 3)]
    try:
        for memory, bits, reserve, expected in cases:
            got = fn(memory, bits, reserve)
            if isinstance(got, bool) or not isinstance(got, (int, float)) or not abs(got - expected) <= 1e-6 * expected:
                print(f"✗ {memory} GB at {bits} bits, keeping {reserve:.0%} free: expected {expected / 1e9:.2f}B "
                      f"parameters, got {got!r:.40}")
                print("  hint: how many bytes may the parameters use, and how many bytes does one take?")
                return False
    except NotImplementedError:
        print("… not done yet: fill in the function (it is the memory formula of the table, solved for parameters)")
        return False
    except Exception as error:  # the learner's bug, in one line
        print(f"✗ your function raised {type(error).__name__}: {error}")
        return False
    print("✓ correct: a 16 GB GPU with 20 % kept free holds 6.4B parameters at 16 bits, 25.6B at 4 bits")
    return True
