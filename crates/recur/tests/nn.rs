//! The newcomer layer `recur::nn`: equal, bit for bit, to the flat-buffer API it wraps
//! (`Stack` with its workspace) for each cell, and equal to PyTorch's outputs and gradients on
//! every full-length case of `tests/fixtures/stack_f32.safetensors` (written by
//! `tests/fixtures/gen_torch.py`), with its weights set by PyTorch's parameter names. Bad shapes
//! and calls out of order are errors naming the problem.

#[path = "support/fixture.rs"]
mod fixture;

use fixture::{check, compare, stack_cases, Fixture};
use recur::cell::{CellKind, LayerInput};
use recur::nn::{Builder, Gru, Lstm, Recurrent, Rnn, State, Tensor};
use recur::stack::Stack;

/// The bound of tests/torch_parity.rs for float32 stacks against torch (see its reasoning there):
/// correct code lands near 1e-7..1e-6, a wrong term at 1e-2 or more.
const F32_REL_TOL: f64 = 1e-5;

/// A second backward adds its products into the gradients already there, so the sums round in
/// another order than 2 * (one backward): a few float32 ulps, where a lost or doubled term would
/// be of order 1.
const ACCUM_REL_TOL: f64 = 1e-6;

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

/// The layer of `builder` against the flat API on the same parameters, input and initial state:
/// outputs, final states, parameter gradients, input and state gradients, all bit for bit.
fn same_as_flat_api(builder: Builder, t: usize, b: usize) {
    let mut layer: Recurrent = builder.build().unwrap();
    let cfg = layer.cfg().clone();
    let i = cfg.input_size;
    let lstm = cfg.kind() == CellKind::Lstm;
    let ld = cfg.num_layers * cfg.dirs();
    let (p, h) = (cfg.out_size(), cfg.hidden_size);
    let x = Tensor::randn(&[t, b, i], 1);
    let state = State {
        h: Tensor::randn(&[ld, b, p], 2),
        c: lstm.then(|| Tensor::randn(&[ld, b, h], 3)),
    };
    let (y, fin) = layer.forward(&x, Some(&state)).unwrap();
    let dy = Tensor::randn(y.shape(), 4);
    let g = layer.backward(&dy).unwrap();

    let stack = Stack::new(cfg.clone()).unwrap();
    let params = layer.params().to_vec();
    let mut ws = stack.workspace::<f32>(t, b);
    let input = LayerInput::Dense { x: x.data(), ld: i };
    let c0 = state.c.as_ref().map(|c| c.data());
    stack.forward(
        &mut ws,
        &params,
        input,
        Some(state.h.data()),
        c0,
        None,
        None,
    );
    let mut grads = vec![0.0f32; stack.num_params()];
    let mut dx = vec![0.0f32; t * b * i];
    stack.backward(
        &mut ws,
        &params,
        &mut grads,
        input,
        None,
        Some(dy.data()),
        None,
        None,
        Some(&mut dx),
    );
    let what = format!("{:?}", cfg);
    assert_eq!(y.shape(), [t, b, cfg.dirs() * p], "{what}");
    assert_eq!(bits(y.data()), bits(ws.output()), "{what}: outputs");
    assert_eq!(bits(fin.h.data()), bits(&ws.h_n), "{what}: h_n");
    if lstm {
        assert_eq!(bits(fin.c.unwrap().data()), bits(&ws.c_n), "{what}: c_n");
    } else {
        assert!(fin.c.is_none());
    }
    assert_eq!(
        bits(layer.grads()),
        bits(&grads),
        "{what}: parameter gradients"
    );
    assert_eq!(bits(g.x.data()), bits(&dx), "{what}: input gradient");
    assert_eq!(bits(g.state.h.data()), bits(&ws.dh0), "{what}: dh0");
    if lstm {
        assert_eq!(
            bits(g.state.c.unwrap().data()),
            bits(&ws.dc0),
            "{what}: dc0"
        );
    }
    // a second backward accumulates, as PyTorch's .grad does; zero_grad clears
    layer.forward(&x, Some(&state)).unwrap();
    layer.backward(&dy).unwrap();
    let twice: Vec<f32> = grads.iter().map(|g| g + g).collect();
    let acc = compare("accumulated gradients", layer.grads(), &twice);
    check(&[acc], ACCUM_REL_TOL, &what);
    layer.zero_grad();
    assert!(layer.grads().iter().all(|&g| g == 0.0));
}

#[test]
fn each_layer_equals_the_flat_buffer_api() {
    recur::set_threads(1);
    same_as_flat_api(Lstm::new(5, 9).layers(2).seed(3), 6, 3);
    same_as_flat_api(
        Lstm::new(4, 8).bidirectional(true).proj_size(3).seed(4),
        5,
        2,
    );
    same_as_flat_api(Gru::new(3, 7).layers(2).bidirectional(true).seed(5), 4, 4);
    same_as_flat_api(Rnn::new(6, 5).bias(false).seed(6), 7, 1);
    same_as_flat_api(Rnn::relu(2, 11).layers(3).seed(7), 3, 5);
}

#[test]
fn layers_match_torch_on_the_stack_fixtures() {
    let fx = Fixture::open("stack_f32.safetensors");
    let cases = stack_cases(&fx);
    let get = |key: String| -> Tensor {
        let (v, shape) = fx.floats(&key);
        Tensor::new(v.into_iter().map(|x| x as f32).collect(), &shape).unwrap()
    };
    let mut ran = 0;
    let mut worst = 0.0f64;
    for c in cases.iter().filter(|c| !c.varlen) {
        let kind = CellKind::parse(&c.cell).unwrap();
        let (i, h) = (c.input_size, c.hidden_size);
        let builder = match kind {
            CellKind::Lstm => Lstm::new(i, h).proj_size(c.proj_size),
            CellKind::Gru => Gru::new(i, h),
            _ if c.cell == "rnn_relu" => Rnn::relu(i, h),
            _ => Rnn::new(i, h),
        };
        let mut layer = builder
            .layers(c.num_layers)
            .bidirectional(c.bidirectional)
            .bias(c.bias)
            .build()
            .unwrap();
        let key = |what: &str| format!("{}/{what}", c.name);
        let names: Vec<String> = layer
            .layout()
            .entries
            .iter()
            .map(|e| e.name.clone())
            .collect();
        for n in &names {
            layer
                .set_param(n, get(key(&format!("param/{n}"))).data())
                .unwrap();
        }
        let lstm = kind == CellKind::Lstm;
        let state = State {
            h: get(key("h0")),
            c: lstm.then(|| get(key("c0"))),
        };
        let x = get(key("x"));
        assert_eq!(x.shape(), [c.t, c.b, i]);
        let (y, fin) = layer.forward(&x, Some(&state)).unwrap();
        let dstate = State {
            h: get(key("S")),
            c: lstm.then(|| get(key("Sc"))),
        };
        let g = layer
            .backward_with_state(&get(key("R")), Some(&dstate))
            .unwrap();
        let mut cmps = vec![
            compare("y", y.data(), get(key("y")).data()),
            compare("h_n", fin.h.data(), get(key("h_n")).data()),
            compare("grad x", g.x.data(), get(key("grad/x")).data()),
            compare("grad h0", g.state.h.data(), get(key("grad/h0")).data()),
        ];
        if lstm {
            let (cn, dc0) = (fin.c.unwrap(), g.state.c.unwrap());
            cmps.push(compare("c_n", cn.data(), get(key("c_n")).data()));
            cmps.push(compare("grad c0", dc0.data(), get(key("grad/c0")).data()));
        }
        for n in &names {
            let want = get(key(&format!("grad/{n}")));
            cmps.push(compare(
                &format!("grad {n}"),
                layer.grad(n).unwrap(),
                want.data(),
            ));
        }
        worst = worst.max(check(&cmps, F32_REL_TOL, &format!("case {}", c.name)));
        ran += 1;
    }
    assert!(ran >= 10, "only {ran} full-length cases");
    println!("{ran} full-length torch cases, worst relative error {worst:.2e}");
}

#[test]
fn bad_shapes_and_order_are_errors_naming_the_problem() {
    let mut lstm = Lstm::new(4, 6).layers(2).build().unwrap();
    let e = lstm.backward(&Tensor::zeros(&[3, 2, 6])).unwrap_err();
    assert!(e.to_string().contains("needs a forward first"), "{e}");
    let e = lstm.forward(&Tensor::zeros(&[3, 2, 5]), None).unwrap_err();
    assert!(
        e.to_string()
            .contains("5 features per step, the layer reads 4"),
        "{e}"
    );
    let e = lstm.forward(&Tensor::zeros(&[3, 8]), None).unwrap_err();
    assert!(e.to_string().contains("must be (T, B, I)"), "{e}");
    let bad = State {
        h: Tensor::zeros(&[1, 2, 6]),
        c: Some(Tensor::zeros(&[2, 2, 6])),
    };
    let e = lstm
        .forward(&Tensor::zeros(&[3, 2, 4]), Some(&bad))
        .unwrap_err();
    assert!(e.to_string().contains("state.h has shape [1, 2, 6]"), "{e}");
    let (y, _) = lstm.forward(&Tensor::zeros(&[3, 2, 4]), None).unwrap();
    assert_eq!(y.shape(), [3, 2, 6]);
    let e = lstm.backward(&Tensor::zeros(&[3, 1, 6])).unwrap_err();
    assert!(e.to_string().contains("dy has shape [3, 1, 6]"), "{e}");
    let e = lstm.param("weight_hh_l2").unwrap_err();
    assert!(e.to_string().contains("no parameter 'weight_hh_l2'"), "{e}");
    let e = Tensor::new(vec![0.0; 5], &[2, 3]).unwrap_err();
    assert!(e.to_string().contains("holds 6 values, 5 given"), "{e}");
    let e = Gru::new(3, 0).build().err().unwrap();
    assert!(e.to_string().contains("hidden"), "{e}");
    let gru_state = State {
        h: Tensor::zeros(&[1, 2, 5]),
        c: Some(Tensor::zeros(&[1, 2, 5])),
    };
    let mut gru = Gru::new(3, 5).build().unwrap();
    let e = gru
        .forward(&Tensor::zeros(&[2, 2, 3]), Some(&gru_state))
        .unwrap_err();
    assert!(
        e.to_string().contains("only an LSTM has a cell state"),
        "{e}"
    );
}

#[test]
fn dropout_applies_only_in_training_mode() {
    let x = Tensor::randn(&[5, 3, 4], 9);
    let mut a = Lstm::new(4, 8)
        .layers(2)
        .dropout(0.5)
        .seed(1)
        .build()
        .unwrap();
    let (eval1, _) = a.forward(&x, None).unwrap();
    let (eval2, _) = a.forward(&x, None).unwrap();
    assert_eq!(eval1, eval2, "evaluation mode is deterministic");
    a.train(true);
    let (tr, _) = a.forward(&x, None).unwrap();
    assert_ne!(tr, eval1, "training mode drops units between the layers");
}

/// `batch_first(true)`: the same layer on (B, T, ...) tensors gives, bit for bit, the time-major
/// layer's outputs, gradients and states with the first two axes swapped (the states unchanged).
#[test]
fn batch_first_swaps_the_first_two_axes() {
    let swap = |x: &Tensor| -> Tensor {
        let s = x.shape();
        let (a, b, c) = (s[0], s[1], s[2]);
        let mut out = vec![0.0f32; a * b * c];
        for i in 0..a {
            for j in 0..b {
                for k in 0..c {
                    out[(j * a + i) * c + k] = x.data()[(i * b + j) * c + k];
                }
            }
        }
        Tensor::new(out, &[b, a, c]).unwrap()
    };
    let (t, b) = (5, 3);
    let mut tm = Lstm::new(4, 6)
        .layers(2)
        .bidirectional(true)
        .seed(9)
        .build()
        .unwrap();
    let mut bf = Lstm::new(4, 6)
        .layers(2)
        .bidirectional(true)
        .seed(9)
        .batch_first(true)
        .build()
        .unwrap();
    let x = Tensor::randn(&[t, b, 4], 1);
    let dy = Tensor::randn(&[t, b, 12], 2);
    let (y1, s1) = tm.forward(&x, None).unwrap();
    let (y2, s2) = bf.forward(&swap(&x), None).unwrap();
    assert_eq!(y2.shape(), [b, t, 12]);
    assert_eq!(bits(swap(&y1).data()), bits(y2.data()));
    assert_eq!(bits(s1.h.data()), bits(s2.h.data()));
    let g1 = tm.backward(&dy).unwrap();
    let g2 = bf.backward(&swap(&dy)).unwrap();
    assert_eq!(g2.x.shape(), [b, t, 4]);
    assert_eq!(bits(swap(&g1.x).data()), bits(g2.x.data()));
    assert_eq!(bits(tm.grads()), bits(bf.grads()));
    assert_eq!(bits(g1.state.h.data()), bits(g2.state.h.data()));
    // a time-major input given to a batch-first layer is an error naming the expected shape
    let e = bf.backward(&dy).unwrap_err();
    assert!(e.to_string().contains("dy has shape"), "{e}");
    let e = bf.forward(&Tensor::zeros(&[3, 8]), None).unwrap_err();
    assert!(e.to_string().contains("(B, T, I)"), "{e}");
}
