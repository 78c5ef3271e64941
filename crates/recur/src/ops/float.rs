//! The scalar trait the kernels are generic over: `f32` for training, `f64` for gradient checks.
//!
//! This is deliberately small: only what the cells, the losses and the optimizers use.

use std::fmt::{Debug, Display};
use std::iter::Sum;
use std::ops::{Add, AddAssign, Div, DivAssign, Mul, MulAssign, Neg, Sub, SubAssign};

/// A floating-point scalar: implemented for `f32` and `f64`.
pub trait Float:
    Copy
    + Send
    + Sync
    + 'static
    + Default
    + PartialOrd
    + Debug
    + Display
    + Sum
    + Add<Output = Self>
    + Sub<Output = Self>
    + Mul<Output = Self>
    + Div<Output = Self>
    + Neg<Output = Self>
    + AddAssign
    + SubAssign
    + MulAssign
    + DivAssign
{
    const ZERO: Self;
    const ONE: Self;
    /// The safetensors dtype name (`F32` or `F64`).
    const DTYPE: &'static str;
    fn from_f64(x: f64) -> Self;
    fn to_f64(self) -> f64;
    fn exp(self) -> Self;
    fn ln(self) -> Self;
    fn tanh(self) -> Self;
    fn sqrt(self) -> Self;
    fn abs(self) -> Self;
    fn max(self, other: Self) -> Self;
    fn min(self, other: Self) -> Self;
    fn is_finite(self) -> bool;
    /// Logistic sigmoid `1 / (1 + exp(-x))`, written so that it never overflows.
    #[inline(always)]
    fn sigmoid(self) -> Self {
        if self >= Self::ZERO {
            Self::ONE / (Self::ONE + (-self).exp())
        } else {
            let e = self.exp();
            e / (Self::ONE + e)
        }
    }
    /// tanh as the cells' element-wise passes compute it: vectorisable for f32
    /// ([`super::act::tanh_f32`], within 4 ulp), the C library's for f64 (exact for gradient checks).
    fn tanh_act(self) -> Self;
    /// The sigmoid as the cells compute it: [`super::act::sigmoid_f32`] for f32, [`Float::sigmoid`]
    /// for f64.
    fn sigmoid_act(self) -> Self;
    fn from_usize(n: usize) -> Self {
        Self::from_f64(n as f64)
    }
}

macro_rules! impl_float {
    ($t:ty, $dtype:expr, $tanh_act:expr, $sigmoid_act:expr) => {
        impl Float for $t {
            const ZERO: Self = 0.0;
            const ONE: Self = 1.0;
            const DTYPE: &'static str = $dtype;
            #[inline(always)]
            fn from_f64(x: f64) -> Self {
                x as $t
            }
            #[inline(always)]
            fn to_f64(self) -> f64 {
                self as f64
            }
            #[inline(always)]
            fn exp(self) -> Self {
                <$t>::exp(self)
            }
            #[inline(always)]
            fn ln(self) -> Self {
                <$t>::ln(self)
            }
            #[inline(always)]
            fn tanh(self) -> Self {
                <$t>::tanh(self)
            }
            #[inline(always)]
            fn sqrt(self) -> Self {
                <$t>::sqrt(self)
            }
            #[inline(always)]
            fn abs(self) -> Self {
                <$t>::abs(self)
            }
            #[inline(always)]
            fn max(self, other: Self) -> Self {
                <$t>::max(self, other)
            }
            #[inline(always)]
            fn min(self, other: Self) -> Self {
                <$t>::min(self, other)
            }
            #[inline(always)]
            fn is_finite(self) -> bool {
                <$t>::is_finite(self)
            }
            #[inline(always)]
            fn tanh_act(self) -> Self {
                $tanh_act(self)
            }
            #[inline(always)]
            fn sigmoid_act(self) -> Self {
                $sigmoid_act(self)
            }
        }
    };
}
impl_float!(f32, "F32", super::act::tanh_f32, super::act::sigmoid_f32);
impl_float!(f64, "F64", f64::tanh, <f64 as Float>::sigmoid);
