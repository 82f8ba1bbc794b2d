//! The patched backward pass (`vendor/candle-core`, `GradStore::accumulate`): the first
//! gradient of a tensor is stored as computed, later ones are added. These pin what the patch
//! must keep: sums over several consumers, signs through `sub` and `neg`, gradients that
//! arrive as views (transpose, broadcast, narrow).

use candle_core::{Device, Result, Tensor, Var};

fn vals(t: &Tensor) -> Result<Vec<f32>> {
    t.flatten_all()?.to_vec1::<f32>()
}

#[test]
fn gradients_of_several_consumers_add_up() -> Result<()> {
    let x = Var::new(&[1f32, -2., 3.], &Device::Cpu)?;
    // y = sum(x * x) + sum(3 x) - sum(x): dy/dx = 2x + 3 - 1.
    let y = ((x.as_tensor() * x.as_tensor())?.sum_all()? + (x.as_tensor() * 3.)?.sum_all()?)?
        .sub(&x.sum_all()?)?;
    let g = y.backward()?;
    assert_eq!(vals(g.get(&x).unwrap())?, vec![4., -2., 8.]);
    Ok(())
}

#[test]
fn first_gradient_through_sub_and_neg_keeps_its_sign() -> Result<()> {
    let a = Var::new(&[1f32, 2.], &Device::Cpu)?;
    let b = Var::new(&[5f32, 7.], &Device::Cpu)?;
    // y = sum((a - b) * [1, 10]) - sum(-b): dy/da = [1, 10], dy/db = -[1, 10] + 1.
    let w = Tensor::new(&[1f32, 10.], &Device::Cpu)?;
    let y = ((a.as_tensor() - b.as_tensor())? * &w)?
        .sum_all()?
        .sub(&b.as_tensor().neg()?.sum_all()?)?;
    let g = y.backward()?;
    assert_eq!(vals(g.get(&a).unwrap())?, vec![1., 10.]);
    assert_eq!(vals(g.get(&b).unwrap())?, vec![0., -9.]);
    Ok(())
}

#[test]
fn gradients_arriving_as_views_are_stored_contiguous() -> Result<()> {
    let dev = Device::Cpu;
    let x = Var::from_tensor(&Tensor::arange(0f32, 6., &dev)?.reshape((2, 3))?)?;
    let w = Tensor::new(&[[1f32, 2.], [3., 4.], [5., 6.]], &dev)?;
    // The only consumer is a transpose: x's gradient is the transposed view of w.
    let y = (x.as_tensor().t()? * &w)?.sum_all()?;
    let g = y.backward()?;
    let gx = g.get(&x).unwrap();
    assert!(gx.is_contiguous());
    assert_eq!(vals(gx)?, vec![1., 3., 5., 2., 4., 6.]);
    // A broadcast (stride 0) and a narrow.
    let b = Var::new(&[2f32], &dev)?;
    let y = (b.as_tensor().broadcast_as(4)? * Tensor::new(&[1f32, 2., 3., 4.], &dev)?)?
        .sum_all()?
        .add(&x.as_tensor().narrow(1, 1, 2)?.sum_all()?)?;
    let g = y.backward()?;
    assert_eq!(vals(g.get(&b).unwrap())?, vec![10.]);
    assert!(g.get(&x).unwrap().is_contiguous());
    assert_eq!(vals(g.get(&x).unwrap())?, vec![0., 1., 1., 0., 1., 1.]);
    Ok(())
}
