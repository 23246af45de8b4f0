//! The same module that generates also trains: on the autodiff backend the per-token
//! log-probs of a sequence give gradients to every parameter.

mod common;

use burn::backend::Autodiff;
use burn::module::Module;
use burn::prelude::*;
use cft::model::{LanguageModel, LoadOptions};
use cft::train::objective::target_log_probs;
use common::{B, fixture, reference};

type AD = Autodiff<B>;

#[test]
fn per_token_logprobs_match_score_and_backpropagate() {
    let model = LanguageModel::<AD>::load(
        &fixture("olmo2"),
        &Default::default(),
        LoadOptions::default(),
    )
    .unwrap();
    let r = reference("olmo2");
    let device = Default::default();
    let seq = &r.prompts[2];
    let t = seq.len() - 1;
    let ids: Vec<i32> = seq[..t].iter().map(|&x| x as i32).collect();
    let targets: Vec<i32> = seq[1..].iter().map(|&x| x as i32).collect();
    let ids = Tensor::<AD, 2, Int>::from_data(TensorData::new(ids, [1, t]), &device);
    let targets = Tensor::<AD, 2, Int>::from_data(TensorData::new(targets, [1, t]), &device);
    let valid = Tensor::<AD, 2, Bool>::from_data(TensorData::new(vec![true; t], [1, t]), &device);
    let lp = target_log_probs(model.lm.forward(ids, valid), targets); // [1, t]
    let got = lp.clone().into_data().to_vec::<f32>().unwrap();
    for (p, g) in got.iter().enumerate() {
        let want = r.score[2][p].next_logprob.unwrap();
        assert!((g - want).abs() < 1e-4, "position {p}: {g} vs {want}");
    }
    let loss = lp.mean().neg();
    let grads = loss.backward();
    let mut with_grad = 0;
    let mut total = 0;
    struct Count<'a> {
        grads: &'a <AD as burn::tensor::backend::AutodiffBackend>::Gradients,
        with_grad: &'a mut usize,
        total: &'a mut usize,
    }
    impl burn::module::ModuleVisitor<AD> for Count<'_> {
        fn visit_float<const D: usize>(&mut self, param: &burn::module::Param<Tensor<AD, D>>) {
            *self.total += 1;
            if let Some(g) = param.val().grad(self.grads) {
                let g = g.into_data().to_vec::<f32>().unwrap();
                assert!(g.iter().all(|x| x.is_finite()));
                *self.with_grad += 1;
            }
        }
    }
    model.lm.visit(&mut Count {
        grads: &grads,
        with_grad: &mut with_grad,
        total: &mut total,
    });
    assert!(total > 20);
    assert_eq!(with_grad, total, "every parameter receives a gradient");
}
